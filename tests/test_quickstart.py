"""piw-quickstart end to end, against a local upstream index over real HTTP.

The upstream (tests/fake_pypi.py) serves one small project plus the build
backend wheels.  Quick start must bring up its database, master, slave and
web server, build the project, serve it to a real ``pip install``, and on
Ctrl-C (SIGINT) stop every process and drop its database.

Run as root, it must also build with pyenv's home closed to other users
(mode 700, as on a fresh system, whatever CI opened), or stop before changing
anything when it cannot; and it takes the upstream from pip when not told.
"""

from __future__ import annotations

import gzip
import http.client
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from fake_pypi import FakePyPI
from farm import BUILD_USER, HOST_PLATFORM, build_user
from packaging.utils import parse_wheel_filename
from quickstart_process import (
    NO_SERVER, SERVER, ClosedHome, QuickStart, build_user_args, quickstart_env, run_quickstart)
from sdist_factory import make_sdist

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: how long the index writer may take to show a recorded build on the project page
PAGE_TIMEOUT_S = 15.0
#: this machine's platform tag, as a pattern (quick start's slaves build for it)
PLATFORM = re.escape(HOST_PLATFORM)
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync")


def quick_databases() -> list[str]:
    engine = sa.create_engine(make_url(SERVER).set(drivername="postgresql+psycopg2"),
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(sa.text(
                "SELECT datname FROM pg_database WHERE datname LIKE 'piwheels_quick_%'")))
    finally:
        engine.dispose()


@pytest.fixture
def upstream(tmp_path, build_backends):
    with FakePyPI() as pypi:
        pypi.publish("Quick-Thing", "1.0", make_sdist(tmp_path / "sdists", "quick-thing", "1.0"))
        # an sdist without a file its setup.py reads: its failure says so
        pypi.publish("quick-broken", "1.0", make_sdist(
            tmp_path / "sdists", "quick-broken", "1.0", setup_body="open('CHANGES.rst')"))
        for wheel in build_backends:
            name, version, _, _ = parse_wheel_filename(wheel.name)
            pypi.publish(str(name), str(version), wheel)
        yield pypi


def test_quickstart_builds_serves_and_stops_cleanly(upstream, tmp_path):
    with QuickStart("--pypi-simple", upstream.simple_url, "--python", "3.11", "--server", SERVER,
                    *build_user_args(), "quick-thing", "quick-broken",
                    env={**os.environ, "PIP_CONFIG_FILE": os.devnull}) as quick:
        index = quick.wait_for(r"pip install --extra-index-url (http://127\.0\.0\.1:\d+/simple/) "
                               r"quick-thing quick-broken$", 90).group(1)
        database, workdir = quick.wait_for(r"database (\w+), files in (/\S+)\.$", 1).groups()
        workdir = Path(workdir)
        assert database in quick_databases()  # its own database
        # each attempt names its target: the ABI on this machine's platform
        quick.wait_for(rf"^built quick-thing 1\.0 for cp311 {PLATFORM}: success "
                       r"\(quick_thing-1\.0-py3-none-any\.whl\)$", 120)
        # a failure's cause, as the master diagnosed it
        quick.wait_for(rf"^built quick-broken 1\.0 for cp311 {PLATFORM}: failed "
                       r"\(broken sdist: .*"
                       r"No such file or directory: 'CHANGES\.rst'", 120)

        # the web server hands the wheel to pip (the page may lag the build a moment)
        target = tmp_path / "installed"
        for _ in range(20):
            pip = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                 "--index-url", index, "--target", str(target), "quick-thing"],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""})
            if pip.returncode == 0:
                break
            time.sleep(0.5)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        # the farm is pip's only index: the wheel (not an sdist) came from there
        assert "quick_thing-1.0-py3-none-any.whl" in pip.stdout
        assert (target / "quick_thing").is_dir() or (target / "quick_thing.py").exists()
        # it followed the named project without the whole upstream list, nor XML-RPC
        assert not [r for r in upstream.requests if r.path.rstrip("/") == "/simple"]
        assert not [r for r in upstream.requests if r.method == "POST"]
    quick.assert_stopped_cleanly()
    assert database not in quick_databases()
    assert not workdir.exists()
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout


@pytest.fixture
def closed_pyenv_home(tmp_path):
    """pyenv's home at mode 700, as on a fresh system, for the quick start the test runs
    through it (in a private mount namespace: the host's stays as it is)."""
    if os.geteuid() != 0:
        pytest.skip("slaves run as a separate build user only when quick start runs as root")
    build_user()
    return ClosedHome(tmp_path / "closed-home")


def http_get(url: str) -> http.client.HTTPResponse:
    address = re.match(r"http://([^/:]+):(\d+)(/.*)", url)
    conn = http.client.HTTPConnection(address.group(1), int(address.group(2)), timeout=10)
    conn.request("GET", address.group(3), headers={"Accept-Encoding": "gzip"})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def test_quickstart_builds_as_root_with_pyenv_home_closed(upstream, tmp_path, closed_pyenv_home):
    """The fresh-machine case: pyenv under a mode-700 /root, no nginx used, the upstream
    taken from pip's configuration; logs readable in a browser."""
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nindex-url = {upstream.simple_url}\n")
    closed = closed_pyenv_home
    with QuickStart("--python", "3.11", "--python", "3.12", "--web-server", "python",
                    "--server", SERVER, "--build-user", BUILD_USER, "quick-thing",
                    env=quickstart_env(PIP_CONFIG_FILE=str(pip_conf)),
                    closed_home=closed) as quick:
        quick.wait_for(rf"^upstream index: {re.escape(upstream.simple_url)} \(from pip [\d.]+'s "
                       r"configuration", 30)
        quick.wait_for(rf"^the slaves run as {BUILD_USER}, who cannot enter {closed.path}: "
                       r"each runs in a private mount namespace", 30)
        index = quick.wait_for(r"pip install --extra-index-url (http://127\.0\.0\.1:\d+/)simple/ "
                               r"quick-thing$", 90).group(1)
        database = quick.wait_for(r"^The farm is up: 2 slave\(s\) \(Python 3\.11, 3\.12\), "
                                  r"database (\w+),", 1).group(1)
        # one build: its pure wheel serves both ABIs
        quick.wait_for(rf"^built quick-thing 1\.0 for cp31[12] {PLATFORM}: success "
                       r"\(quick_thing-1\.0-py3-none-any\.whl\)$", 120)
        quick.wait_for(r"^nothing left to build", 30)
        assert closed.mode() == 0o700  # quick start left the home closed

        # quick start reports the build from the database; the index writer
        # rewrites the project page a moment later
        page_url = f"{index}project/quick-thing/"
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            page = http_get(page_url)
            assert page.status == 200, page.status
            logs = [urljoin(page_url, href) for href in
                    set(re.findall(r'href="([./]*logs/[0-9/]+\.txt\.gz)"', page.body.decode()))]
            if logs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(logs) == 1, page.body.decode()
        log = http_get(logs[0])
        assert log.status == 200
        assert log.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert log.getheader("Content-Encoding") == "gzip"
        text = gzip.decompress(log.body).decode()
        assert "quick_thing-1.0-py3-none-any.whl" in text, text
        assert http_get(index + "logs/.hidden").status == 404
        if CHROMIUM:  # a browser shows the log as text instead of downloading it
            shown = subprocess.run(
                [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                 "--dump-dom", logs[0]],
                capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
                env={**os.environ, "HOME": str(tmp_path)})
            assert shown.returncode == 0, shown.stderr[-2000:]
            assert "<pre" in shown.stdout and "quick_thing-1.0-py3-none-any.whl" in shown.stdout, \
                shown.stdout[:2000]

        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
             "--index-url", index + "simple/", "--target", str(tmp_path / "installed"),
             "quick-thing"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""})
        assert pip.returncode == 0, pip.stdout + pip.stderr
        assert "quick_thing-1.0-py3-none-any.whl" in pip.stdout
    quick.assert_stopped_cleanly()
    assert database not in quick_databases()


@pytest.mark.parametrize("withheld", ["util-linux", "CAP_SYS_ADMIN"])
def test_quickstart_stops_before_changing_anything_without_namespaces(
        closed_pyenv_home, withheld):
    """With the home closed and no way to make a mount namespace (util-linux not on
    PATH, or no right to mount, as in some containers), it says the command that opens
    the home, and has made no user and no database (had it gone on to the database,
    it would have found no server there)."""
    new_user = "piwquick-unmade"
    assert not [u for u in pwd.getpwall() if u.pw_name == new_user]
    closed = closed_pyenv_home
    args = ("--pypi-simple", "http://127.0.0.1:1/simple/", "--python", "3.12",
            "--server", NO_SERVER, "--build-user", new_user, "quick-thing")
    if withheld == "util-linux":
        result = run_quickstart(*args, env=quickstart_env(PATH=os.devnull), closed_home=closed)
    else:
        result = run_quickstart(*args, closed_home=closed,
                                prefix=["setpriv", "--bounding-set=-sys_admin"])
    assert result.returncode == 1, result.stdout + result.stderr
    error, = result.stderr.splitlines()  # one line
    assert error.startswith("error: "), result.stderr
    assert f"{new_user} cannot enter {closed.path}" in error or \
        f"does not run as {new_user} in a private mount namespace" in error, error
    assert re.search(rf"`chmod o\+x {closed.path}`( lets {new_user} in without one)?$",
                     error), error
    assert not [u for u in pwd.getpwall() if u.pw_name == new_user]


def test_quickstart_uses_pips_own_default_index(tmp_path):
    """Nothing names an upstream: quick start takes the index pip itself would use,
    read from pip (here its --help, another route), and says where it came from."""
    pip_help = subprocess.run([sys.executable, "-m", "pip", "download", "--help"],
                              capture_output=True, text=True, timeout=60,
                              env=quickstart_env()).stdout
    default = re.search(r"--index-url <url>\s+Base URL of the Python Package Index "
                        r"\(default\s+(\S+?)\)", pip_help).group(1)
    result = run_quickstart("--server", NO_SERVER, "quick-thing", cwd=tmp_path)
    assert result.stdout.splitlines()[0] == (
        f"upstream index: {default} (from pip {pip_version()}'s built-in default; "
        "--pypi-simple names another)"), result.stdout
    # it stopped at the unreachable server, before making anything
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach PostgreSQL"), result.stderr


def pip_version() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                          text=True, timeout=60).stdout.split()[1]


def test_quickstart_script_says_what_it_creates_before_creating_it(tmp_path):
    """A first `./quickstart --help` in a fresh checkout first says it makes .venv with
    piwheels in it, then makes it and shows the help; a second run just shows it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "*.egg-info", "__pycache__", ".*_cache", "build"))
    first = subprocess.run([str(checkout / "quickstart"), "--help"], capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    said = first.stderr.splitlines()[0]
    assert said.startswith(f"quickstart: first run: creating {checkout}/.venv, a virtual "
                           "environment of Python 3."), said
    assert "with piwheels from this checkout installed in it" in said, said
    assert first.stdout.startswith("usage: piw-quickstart"), first.stdout
    assert (checkout / ".venv" / "bin" / "piw-quickstart").exists()
    again = subprocess.run([str(checkout / "quickstart"), "--help"], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert again.stdout == first.stdout


def test_quickstart_not_root_names_an_interpreter_it_cannot_reach(tmp_path):
    """Not root, quick start cannot lend its slaves a namespace: an interpreter under
    a directory it cannot enter is a one-line error, before anything is made."""
    user = build_user()
    if user is None:
        pytest.skip("needs root to run quick start as another user")
    closed = Path(tempfile.mkdtemp(prefix="piw-closed-"))
    try:
        os.chmod(closed, 0o700)
        shutil.copy(sys.executable, closed / "python3")
        result = run_quickstart(
            "--pypi-simple", "http://127.0.0.1:1/simple/", "--python", str(closed / "python3"),
            "--server", NO_SERVER, "quick-thing", cwd="/", user=user.pw_uid, group=user.pw_gid,
            extra_groups=[], env=quickstart_env(HOME=user.pw_dir))
    finally:
        shutil.rmtree(closed)
    if "Permission denied" in result.stderr and "piw-quickstart" in result.stderr:
        pytest.skip(f"{user.pw_name} cannot run this venv's piw-quickstart itself")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == (
        f"error: {closed}/python3 lies under {closed}, which "
        f"{user.pw_name} cannot enter; run quick start as root (its slaves then reach it "
        "through a private mount namespace), or pass --python an interpreter you can run\n")
