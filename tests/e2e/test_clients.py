"""Every installer the farm's users really have, against the farm's real output.

The pip each Debian release ships (20.3.4 on bullseye's CPython 3.9, 23.0.1 on
bookworm's 3.11, 25.1.1 on trixie's 3.13), the newest pip and uv install a
pure, a C-extension and an abi3 wheel from the farm, download them, install
them in hash-checking mode and resolve them with ``--dry-run``.  Each runs in
its own venv made from a pyenv CPython, with that pip release installed from
the package registry; the venvs are cached between runs (see
:func:`client_venv`).  The wheels are real builds (each C extension by the
CPython it is for), published by the master's real build_recorder and
index_writer, and every client talks to its own nginx running the documented
site, whose access log shows what that client fetched and in which form.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional, Sequence

import pytest
from fake_index import TEST_CACHE
from farm import pyenv_python, wait_for, host_target
from index_publisher import Publisher, clean_env
from installers import PIP_CORE_METADATA, PIP_DRY_RUN, PIP_JSON, PIP_METADATA_DRY_RUN
from packaging.utils import parse_wheel_filename
from packaging.version import Version
from sdist_factory import make_sdist
from web_server import NginxServer, Request, nginx_binary

from piwheels.db import Database
from piwheels.index_pages import Site
from piwheels.initdb import initdb
from piwheels.tags import Target

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(nginx_binary() is None,
                       reason="needs nginx (apt install nginx-light libnginx-mod-http-js)"),
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
#: Where the client venvs are kept between runs.
CACHE = TEST_CACHE
#: How long a venv holding "the newest pip" is trusted before it is made again.
NEWEST_PIP_MAX_AGE_S = 24 * 3600
NEWEST = "newest"
STEP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Client:
    name: str
    minor: str               # the pyenv CPython 3.<minor> it runs on
    pip: Optional[str]       # the pip release ("newest": the registry's); None for uv

    @property
    def abi(self) -> str:
        return f"cp3{self.minor}"


CLIENTS = (
    Client("pip-20.3.4", "9", "20.3.4"),     # Debian 11 (bullseye)
    Client("pip-23.0.1", "11", "23.0.1"),    # Debian 12 (bookworm), Raspberry Pi OS
    Client("pip-25.1.1", "13", "25.1.1"),    # Debian 13 (trixie)
    Client("pip-newest", "12", NEWEST),
    Client("uv", "10", None),
)
PIP_CLIENTS = [c for c in CLIENTS if c.pip is not None]
ABIS = sorted({c.abi for c in CLIENTS})
#: the farm's build targets: each client's ABI on this machine's platform
TARGETS = {abi: Target(*host_target(abi)) for abi in ABIS}

PURE, NATIVE, ABI3 = "piw-clients-pure", "piw-clients-native", "piw-clients-abi3"
PROJECTS = (PURE, NATIVE, ABI3)
VERSION = "1.0"
#: Run by the client's own CPython where it installed them: all three answer 42.
IMPORT_CHECK = ("import piw_clients_pure, piw_clients_native, piw_clients_abi3; print("
                "piw_clients_pure.ANSWER, piw_clients_native.answer(), piw_clients_abi3.answer())")


# --- the farm's wheels, built by the interpreters they are for ----------------------------


@pytest.fixture(scope="module")
def wheels(build_index, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """{(project, abi it was built on): wheel}: the pure and abi3 wheels built on
    CPython 3.9, the C extension on every client's CPython, each by that CPython's
    own pip in an isolated build (setuptools from the local build index)."""
    root = tmp_path_factory.mktemp("client-wheels")
    sdists = {
        PURE: make_sdist(root / "sdists", PURE, VERSION),
        NATIVE: make_sdist(root / "sdists", NATIVE, VERSION, kind="c_ext"),
        ABI3: make_sdist(root / "sdists", ABI3, VERSION, kind="abi3"),
    }
    oldest = min(ABIS, key=lambda abi: int(abi[3:]))
    jobs = [(PURE, oldest), (ABI3, oldest)] + [(NATIVE, abi) for abi in ABIS]
    runs = {}
    for project, abi in jobs:
        out = root / "wheels" / f"{project}-{abi}"
        runs[(project, abi)] = (out, subprocess.Popen(
            [pyenv_python(abi[3:]), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
             "--quiet", "--index-url", build_index.url, "--wheel-dir", str(out),
             str(sdists[project])],
            env=clean_env(root), cwd=root, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE))
    found = {}
    for key, (out, run) in runs.items():
        _, stderr = run.communicate(timeout=STEP_TIMEOUT_S)
        assert run.returncode == 0, f"{key}: {stderr.decode(errors='replace')}"
        [found[key]] = out.glob("*.whl")
    tags = {key: {(t.interpreter, t.abi) for t in parse_wheel_filename(w.name)[3]}
            for key, w in found.items()}
    assert tags[(PURE, oldest)] == {("py3", "none")}
    assert tags[(ABI3, oldest)] == {(oldest, "abi3")}
    for abi in ABIS:
        assert tags[(NATIVE, abi)] == {(abi, abi)}
    return found


def expected_wheels(wheels: dict, client: Client) -> dict[str, Path]:
    """{project: the wheel *client* must choose}."""
    return {project: path for (project, abi), path in wheels.items()
            if project != NATIVE or abi == client.abi}


@pytest.fixture(scope="module")
def output(postgres, master_role, wheels, tmp_path_factory) -> Path:
    """The farm's output tree with every wheel recorded and its pages written."""
    base = tmp_path_factory.mktemp("clients-farm")
    database = postgres.create_database()
    with open(os.devnull, "w") as quiet:
        initdb(postgres.dsn(database), master_role, assume_yes=True, out=quiet)
    dsn = postgres.dsn(database, master_role)
    tree = base / "output"
    db = Database(dsn)
    publisher = Publisher(dsn, tree, Site(name="Client test farm",
                                          index_url="http://127.0.0.1/simple/",
                                          upstream_simple="http://upstream.test/simple/"),
                          base / "transfers")
    try:
        for target in TARGETS.values():
            db.add_build_target(target)
        released = datetime(2026, 3, 1, tzinfo=timezone.utc)
        for hour, project in enumerate(PROJECTS):
            db.add_package(project, description=f"{project}, made by the client tests")
            db.add_version(project, VERSION, released=released + timedelta(hours=hour),
                           has_sdist=True)
        for (project, abi), wheel in wheels.items():
            publisher.record(project, VERSION, TARGETS[abi], wheel)

        def listed() -> bool:
            publisher.check()
            for project in PROJECTS:
                page = tree / "simple" / project / "index.json"
                want = {w.name for (p, _), w in wheels.items() if p == project}
                if not page.exists() or {f["filename"] for f in json.loads(
                        page.read_bytes())["files"]} != want:
                    return False
            return True
        wait_for(listed, 20, "every project page to list its wheels", interval_s=0.05)
        yield tree
    finally:
        publisher.stop()
        db.close()


# --- the clients' venvs, cached between runs ----------------------------------------------


def client_venv(client: Client) -> tuple[Path, Version]:
    """The venv holding *client*'s pip, and that pip's version.

    Kept under :data:`CACHE` by CPython release and pip release, and made again
    when it no longer runs or holds another pip (or, for the newest pip, is more
    than a day old).  Made with the machine's own pip configuration, since the pip
    release comes from the package registry; a lock keeps concurrent test runs
    from making the same venv twice.
    """
    python = pyenv_python(client.minor)
    release = Path(python).parents[1].name
    cache = CACHE / "client-venvs"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"cpython-{release}-pip-{client.pip}"
    stamp = venv / ".piwheels-test-venv"
    with open(cache / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = venv_pip_version(venv)
        fresh = stamp.exists() and (client.pip != NEWEST or
                                    time.time() - stamp.stat().st_mtime < NEWEST_PIP_MAX_AGE_S)
        if version is None or not fresh or (client.pip != NEWEST and
                                            version != Version(client.pip)):
            shutil.rmtree(venv, ignore_errors=True)
            spec = "pip" if client.pip == NEWEST else f"pip=={client.pip}"
            for command in ([python, "-m", "venv", str(venv)],
                            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", "--upgrade", spec]):
                made = subprocess.run(command, capture_output=True, text=True,
                                      stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT_S)
                assert made.returncode == 0, f"{command}:\n{made.stdout}{made.stderr}"
            version = venv_pip_version(venv)
            assert version is not None, f"{venv} has no working pip"
            stamp.write_text(f"{version}\n")
    return venv, version


def venv_pip_version(venv: Path) -> Optional[Version]:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    found = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60,
                           env=clean_env(venv))
    words = found.stdout.split()
    if found.returncode != 0 or len(words) < 2 or words[0] != "pip":
        return None
    return Version(words[1])


# --- running every client against its own nginx ---------------------------------------------


@dataclass
class Step:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    requests: list[Request]

    def __str__(self) -> str:
        return f"{self.command} exited {self.returncode}\n{self.stdout}\n{self.stderr}"

    def fetched(self, suffix: str) -> set[str]:
        """The file names ending in *suffix* this step fetched (status 200)."""
        return {r.path.rsplit("/", 1)[1] for r in self.requests
                if r.status == 200 and r.path.endswith(suffix)}

    def pages(self) -> dict[str, str]:
        """{project page path: the content type it was served as}."""
        return {r.path: r.content_type.split(";")[0] for r in self.requests
                if r.path.count("/") == 3 and r.path.endswith("/") and r.status == 200}


@dataclass
class Outcome:
    client: Client
    version: Version                   # the installer's own version
    index_url: str
    work: Path
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def is_uv(self) -> bool:
        return self.client.pip is None

    @property
    def reads_json(self) -> bool:
        return self.is_uv or self.version >= PIP_JSON

    @property
    def reads_core_metadata(self) -> bool:
        return self.is_uv or self.version >= PIP_CORE_METADATA

    @property
    def has_dry_run(self) -> bool:
        return self.is_uv or self.version >= PIP_DRY_RUN


def published_hashes(server: NginxServer, wrong: bool = False) -> str:
    """A requirements file pinning each project to the sha256 of every file its
    JSON page lists (*wrong*: with the pure wheel's hash altered)."""
    lines = []
    for project in PROJECTS:
        status, _, body = server.get(f"/simple/{project}/", {"Accept": JSON_TYPE})
        assert status == 200, project
        hashes = []
        for entry in json.loads(body)["files"]:
            digest = entry["hashes"]["sha256"]
            if wrong and project == PURE:
                digest = hashlib.sha256(digest.encode()).hexdigest()
            hashes.append(f"--hash=sha256:{digest}")
        lines.append(f"{project}=={VERSION} " + " ".join(hashes))
    return "\n".join(lines) + "\n"


class Session:
    """One client's run: every command against its own server, the requests each made."""

    def __init__(self, outcome: Outcome, server: NginxServer) -> None:
        self.outcome = outcome
        self.server = server

    def run(self, name: str, command: Sequence[str], env: Optional[dict] = None) -> Step:
        mark = self.server.log_mark()
        done = subprocess.run(
            list(command), env={**clean_env(self.outcome.work), **(env or {})},
            cwd=self.outcome.work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=STEP_TIMEOUT_S)
        step = Step(list(command), done.returncode, done.stdout, done.stderr,
                    self.server.requests_since(mark))
        self.outcome.steps[name] = step
        return step


def exercise_pip(session: Session, venv: Path) -> None:
    outcome, work = session.outcome, session.outcome.work
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip"]
    index = ["--no-cache-dir", "--index-url", outcome.index_url]
    target = work / "installed"
    if session.run("install", [*pip, "install", "--no-compile", *index, "--target",
                               str(target), *PROJECTS]).returncode == 0:
        session.run("import", [python, "-c", IMPORT_CHECK], {"PYTHONPATH": str(target)})
    session.run("download", [*pip, "download", "--no-deps", *index, "--dest",
                             str(work / "downloaded"), *PROJECTS])
    for name, wrong in (("hashes", False), ("wrong-hashes", True)):
        requirements = work / f"{name}.txt"
        requirements.write_text(published_hashes(session.server, wrong))
        session.run(name, [*pip, "install", "--no-compile", *index, "--require-hashes",
                           "--target", str(work / name), "-r", str(requirements)])
    if outcome.has_dry_run:
        session.run("dry-run", [*pip, "install", "--dry-run", *index, "--target",
                                str(work / "dry-run"), *PROJECTS])


def exercise_uv(session: Session, python: str) -> None:
    work = session.outcome.work
    index = ["--no-config", "--no-cache", "--index-url", session.outcome.index_url]

    def venv(name: str) -> Path:
        path = work / f"venv-{name}"
        made = subprocess.run([UV, "venv", "--no-config", "--quiet", "--python", python,
                               str(path)], env=clean_env(work), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        assert made.returncode == 0, made.stderr
        return path

    installed = venv("install")
    if session.run("install", [UV, "pip", "install", *index, "--python", str(installed),
                               *PROJECTS]).returncode == 0:
        session.run("import", [str(installed / "bin" / "python"), "-c", IMPORT_CHECK])
    for name, wrong in (("hashes", False), ("wrong-hashes", True)):
        requirements = work / f"{name}.txt"
        requirements.write_text(published_hashes(session.server, wrong))
        session.run(name, [UV, "pip", "install", *index, "--require-hashes", "--python",
                           str(venv(name)), "-r", str(requirements)])
    session.run("dry-run", [UV, "pip", "install", *index, "--dry-run", "--python",
                            str(venv("dry-run")), *PROJECTS])


def exercise(client: Client, output: Path, base: Path) -> Outcome:
    """Make (or reuse) *client*'s venv and run every command through its own nginx."""
    work = base / client.name
    work.mkdir()
    if client.pip is None:
        assert UV is not None, "uv is not installed (it is in the test extras)"
        version = Version(subprocess.run([UV, "--version"], capture_output=True, text=True,
                                         check=True).stdout.split()[1])
        venv = None
    else:
        venv, version = client_venv(client)
    with NginxServer(work / "nginx", output) as server:
        outcome = Outcome(client, version, server.url + "simple/", work)
        session = Session(outcome, server)
        if venv is None:
            exercise_uv(session, pyenv_python(client.minor))
        else:
            exercise_pip(session, venv)
    return outcome


@pytest.fixture(scope="module")
def matrix(output, tmp_path_factory) -> dict[str, Outcome]:
    """Every client's outcome; the clients run side by side."""
    base = tmp_path_factory.mktemp("clients")
    with ThreadPoolExecutor(max_workers=len(CLIENTS)) as pool:
        futures = {c.name: pool.submit(exercise, c, output, base) for c in CLIENTS}
        return {name: future.result() for name, future in futures.items()}


def outcome_of(matrix: dict[str, Outcome], client: Client, step: str) -> tuple[Outcome, Step]:
    outcome = matrix[client.name]
    assert step in outcome.steps, f"{client.name} never ran {step}"
    return outcome, outcome.steps[step]


# --- what every client must manage --------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)
def test_installs_pure_c_extension_and_abi3_wheels(matrix, wheels, client):
    outcome, step = outcome_of(matrix, client, "install")
    assert step.returncode == 0, str(step)
    want = expected_wheels(wheels, client)
    assert step.fetched(".whl") == {w.name for w in want.values()}
    # the form of the project pages it asked for, and PEP 658 metadata where it reads it
    pages = step.pages()
    assert set(pages) == {f"/simple/{p}/" for p in PROJECTS}, pages
    wanted = JSON_TYPE if outcome.reads_json else "text/html"
    assert set(pages.values()) == {wanted}, pages
    metadata = {w.name + ".metadata" for w in want.values()}
    assert step.fetched(".metadata") == (metadata if outcome.reads_core_metadata else set())
    agent = "uv/" if outcome.is_uv else f"pip/{outcome.version} "
    assert all(r.user_agent.startswith(agent) for r in step.requests)
    _, imported = outcome_of(matrix, client, "import")
    assert imported.returncode == 0, str(imported)
    assert imported.stdout.split() == ["42", "42", "42"]  # the compiled modules run


@pytest.mark.parametrize("client", PIP_CLIENTS, ids=lambda c: c.name)
def test_pip_download_saves_the_farms_wheels(matrix, wheels, client):
    outcome, step = outcome_of(matrix, client, "download")
    assert step.returncode == 0, str(step)
    saved = {p.name: p.read_bytes() for p in (outcome.work / "downloaded").iterdir()}
    assert saved == {w.name: w.read_bytes() for w in expected_wheels(wheels, client).values()}


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)
def test_hash_checking_mode_with_the_published_hashes(matrix, wheels, client):
    outcome, step = outcome_of(matrix, client, "hashes")
    assert step.returncode == 0, str(step)
    assert step.fetched(".whl") == {w.name for w in expected_wheels(wheels, client).values()}
    # and the check is real: one altered hash stops the install
    _, wrong = outcome_of(matrix, client, "wrong-hashes")
    assert wrong.returncode != 0, str(wrong)
    said = (wrong.stdout + wrong.stderr).lower()
    assert "hash" in said and PURE in said.replace("_", "-"), str(wrong)


DRY_RUN_CLIENTS = [c for c in CLIENTS if c.pip is None or c.pip == NEWEST
                   or Version(c.pip) >= PIP_DRY_RUN]


@pytest.mark.parametrize("client", DRY_RUN_CLIENTS, ids=lambda c: c.name)
def test_dry_run_reads_only_core_metadata_where_the_client_can(matrix, wheels, client):
    """PEP 658: a client that reads ``core-metadata`` resolves from the .metadata files;
    pips before 25.3 still download the chosen wheels afterwards."""
    outcome, step = outcome_of(matrix, client, "dry-run")
    assert step.returncode == 0, str(step)
    want = expected_wheels(wheels, client)
    text = step.stdout + step.stderr
    for project in PROJECTS:
        assert project in text.replace("_", "-").lower(), text
    if outcome.reads_core_metadata:
        assert step.fetched(".metadata") == {w.name + ".metadata" for w in want.values()}
    else:
        assert step.fetched(".metadata") == set()
    fetches_wheels = (not outcome.reads_core_metadata
                      or (not outcome.is_uv and outcome.version < PIP_METADATA_DRY_RUN))
    assert step.fetched(".whl") == ({w.name for w in want.values()} if fetches_wheels
                                    else set())
    # and nothing was installed
    where = outcome.work / ("venv-dry-run" if outcome.is_uv else "dry-run")
    assert not [p for p in where.rglob("piw_clients_*")], "a dry run installed something"


def test_the_project_pages_have_a_column_per_target(output, wheels):
    """Each build target is a column of the project page; the pure and abi3 wheels
    built for the oldest fill every column, each C extension only its own; and each
    wheel says the target it was built for."""
    keys = {str(target) for target in TARGETS.values()}
    for project in PROJECTS:
        page_path = output / "project" / project / "json" / "index.json"
        built_for = {w.name: str(TARGETS[abi]) for (p, abi), w in wheels.items() if p == project}

        def page(path=page_path, want=built_for):
            data = json.loads(path.read_bytes()) if path.exists() else None
            return data if data and {f["filename"] for f in data["versions"][0]["files"]} == \
                set(want) else None
        data = wait_for(page, 10, f"{project}'s project page to list its wheels")
        assert {t["key"] for t in data["targets"]} == keys
        [version] = data["versions"]
        assert {key: cell["status"] for key, cell in version["builds"].items()} == \
            dict.fromkeys(keys, "success")
        assert {f["filename"]: f["built_for"] for f in version["files"]} == built_for


def test_every_client_was_the_one_named(matrix):
    """The venvs really hold the pip releases the matrix names (20.3.4, 23.0.1, ...)."""
    found = {name: str(o.version) for name, o in matrix.items()}
    for client in PIP_CLIENTS:
        if client.pip != NEWEST:
            assert found[client.name] == client.pip
    assert Version(found["pip-newest"]) >= PIP_METADATA_DRY_RUN
