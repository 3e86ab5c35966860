"""piw-quickstart end to end, against a local upstream index over real HTTP.

The upstream (tests/fake_pypi.py) serves one small project plus the build
backend wheels.  Quick start must bring up its database, master, slave and
web server, build the project, serve it to a real ``pip install``, and on
Ctrl-C (SIGINT) stop every process and drop its database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from fake_pypi import FakePyPI
from farm import BUILD_USER, build_user
from packaging.utils import parse_wheel_filename
from sdist_factory import make_sdist

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SERVER = os.environ.get("PIWHEELS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


class Lines:
    """A process's output, read line by line in the background."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.2)
        raise AssertionError(f"no line like {pattern!r} within {timeout_s} s:\n"
                             + "\n".join(self.lines))


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
        for wheel in build_backends:
            name, version, _, _ = parse_wheel_filename(wheel.name)
            pypi.publish(str(name), str(version), wheel)
        yield pypi


def test_quickstart_builds_serves_and_stops_cleanly(upstream, tmp_path):
    before = set(quick_databases())
    user = build_user()
    proc = subprocess.Popen(
        [str(BIN / "piw-quickstart"), "--pypi-simple", upstream.simple_url, "--python", "3.11",
         "--server", SERVER, *(["--build-user", BUILD_USER] if user else []), "quick-thing"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    out = Lines(proc)
    try:
        index = out.wait_for(r"pip install --extra-index-url (http://127\.0\.0\.1:\d+/simple/) "
                             r"quick-thing$", 90).group(1)
        workdir = Path(out.wait_for(r"files in (/\S+)\.$", 1).group(1))
        assert set(quick_databases()) - before  # its own database
        out.wait_for(r"^built quick-thing 1\.0 for cp311: success "
                     r"\(quick_thing-1\.0-py3-none-any\.whl\)$", 120)
        out.wait_for(r"^nothing left to build", 30)

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
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    out.thread.join(5)
    assert proc.returncode == 0, "\n".join(out.lines)
    assert out.lines[-1] == "stopped; the database and all files are gone", out.lines
    assert set(quick_databases()) == before
    assert not workdir.exists()
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout
