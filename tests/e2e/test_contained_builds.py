"""Contained builds, end to end: hostile sdists and real-world kinds on real slaves.

One farm, two slaves (as the build user, so the queue takes half the time
on two cores), one queue, taken in this order: a setup.py-only project, every
hostile sdist of :mod:`hostile_sdists`, every other kind of
:mod:`backend_sdists`, then the traps in the wheel directory and a plain
build.  Each slave that took an attack must go on building.  The test plants what a build must not reach (a secret
in the slave's environment, its key file, its config, ``~/.pgpass``), opens a
listener of its own, and afterwards looks at the host: what survived, what
was written, what connected.  The assertions are parametrised over the
attacks' targets and the kinds; the farm runs once for all of them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Optional

import pytest
from backend_sdists import KIND_BY_NAME, KINDS, make_kind_sdist
from farm import Farm, builds_of, pyenv_python
from hostile_sdists import (
    NAME_PREFIX,
    WHEEL_TRAPS,
    SECRET_VARIABLE,
    Report,
    attack_finished,
    attack_started,
    describe,
    make_hostile_sdist,
    make_wheel_trap_sdist,
    parse_reports,
    payload_wheel,
    wheel_trap_name,
)

from piwheels.db import Database
from piwheels.slave import processes

pytestmark = pytest.mark.slow

SLAVE_PYTHON_MINOR = "11"
LABELS = ("contained-a", "contained-b")
#: How long the queue may take up to the wheel-dir traps, and those after it.
RUN_TIMEOUT_S = 600
TRAPS_TIMEOUT_S = 60
#: The PID limit and disk quota the slave is given for this test, and the
#: caps of the attacks (several times the limits, so a limit that holds stops
#: the attack well before its cap, and an attack nothing stops ends by itself).
PID_LIMIT = 128
FORK_BOMB_CAP = 4 * PID_LIMIT
DISK_QUOTA_MIB = 128
DISK_FILLER_CAP_BYTES = 2 * DISK_QUOTA_MIB * 2**20
#: How long processes an attack leaves behind sleep (longer than the run).
LINGER_S = 900
#: The order hostile sdists are queued in (between the first kind and the rest).
ATTACKS = ("connect", "secrets", "writes", "fork-bomb", "escapee", "disk-filler",
           "url-requires")
#: The attack whose code a contained build may never run (its fetch is refused).
FETCH_ATTACKS = ("url-requires",)
#: The kind built first, before any attack (it fills the slave's cache).
FIRST_KIND = "setup-py-only"
#: The wheel-dir traps in the order queued (a trap that hangs the slave stops
#: the rest): "none" is a plain build last.
TRAPS = ("secret-link", "sparse", "dev-zero", "fifo", "none")
assert set(TRAPS) == set(WHEEL_TRAPS)
#: What each attack's targets are, for the parametrised assertions.
CONNECT_TARGETS = ("postgres-tcp", "postgres-socket", "master-jobs", "master-files",
                   "test-listener", "upstream-index")
SECRET_TARGETS = ("pgpass", "slave-key", "slave-config", "slave environ", "any environ")
WRITE_TARGETS = ("tmp", "var-tmp", "dev-shm", "home", "cache",
                 *(f"work-dir-{label}" for label in LABELS))
FILLER_PLACES = ("build dir", "TMPDIR", "/tmp", "/var/tmp", "/dev/shm", "/dev", "HOME",
                 "wheel dir")
POSTGRES_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


class Listener:
    """A TCP listener on loopback that records what each connection sent; to an HTTP
    GET it answers with the bytes of *reply* (a wheel, for pip)."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    data = conn.recv(256)
                    self.accepted.append(data)
                    if data.startswith(b"GET "):
                        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream"
                                     b"\r\nContent-Length: %d\r\n\r\n" % len(self.reply)
                                     + self.reply)
                except OSError:
                    self.accepted.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class Planted:
    """The secret the test plants, and where."""

    secret: str
    files: dict[str, Path]
    #: what the test made outside its temporary dirs and must remove
    made: list[Path] = field(default_factory=list)


@dataclass
class ContainedRun:
    """Everything the assertions look at, gathered once."""

    token: str
    secret: str
    #: per slave label: its pid, whether it was still running, its log, its state
    slave_pids: dict[str, int]
    slave_alive: dict[str, bool]
    slave_logs: dict[str, str]
    slave_states: dict[str, str]
    work_root: Path
    cache_dir: Path
    canary: Path
    canary_bytes: bytes
    output: Path
    listener_accepted: list[bytes]
    write_dirs: dict[str, Path]
    builds: dict[str, object]
    logs: dict[str, str]
    order: list[str]
    #: processes below the slave once it was idle again (pid: command line)
    descendants: dict[int, str]
    #: processes anywhere with the escapee's marker in their command line
    escapees: dict[int, str]
    #: files of the index and their sha256, to compare the cache with
    index_hashes: dict[str, str]
    python: str
    platform_tag: str
    python_tag: str


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def processes_with(marker: str) -> dict[int, str]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            line = cmdline(int(entry.name))
            if marker in line:
                found[int(entry.name)] = line
    return found


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass


def plant_secrets(farm: Farm, secret: str, token: str, home: Path) -> Planted:
    """A ``~/.pgpass``, a key file and a config file of the slave, each holding *secret*.

    *home* is the slaves' HOME (one of this farm's own: test runs at the same
    time each have theirs).  The key file is the slave's real CURVE secret key
    (the farm's), with the secret added as a comment; the config file in a
    directory under /opt, a system tree a contained build sees, so that only
    the slave's hiding it keeps it from the build.
    """
    user = farm.user
    key = farm.slave_key(LABELS[0])
    config_dir = Path("/opt") / f"piw-test-{token}"
    files = {
        "pgpass": home / ".pgpass",
        "slave-key": key,
        "slave-config": config_dir / "slave.conf",
    }
    planted = Planted(secret=secret, files=files)
    contents = {
        "pgpass": f"127.0.0.1:5432:*:postgres:{secret}\n",
        "slave-key": key.read_text() + f"# planted by the containment test: {secret}\n",
        "slave-config": f"# planted by the containment test: {secret}\n",
    }
    for directory in (home, config_dir):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
    planted.made.append(config_dir)
    for name, path in files.items():
        path.write_text(contents[name])
        path.chmod(0o600)
        planted.made.insert(0, path)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
    return planted


def wait_quietly(farm: Farm, condition, timeout_s: float) -> bool:
    """Whether *condition* came true in time (a daemon that died still fails at once)."""
    try:
        farm.wait(condition, timeout_s, "the build queue")
    except AssertionError as exc:
        if "timed out" not in str(exc):
            raise
        return False
    return True


def slave_facts(python: str) -> tuple[str, str]:
    """The build interpreter's (python tag, platform tag) for a local build."""
    probe = subprocess.run(
        [python, "-c", "import sysconfig, sys; print(f'cp{sys.version_info[0]}"
         "{sys.version_info[1]}', sysconfig.get_platform().replace('-', '_').replace('.', '_'))"],
        capture_output=True, text=True, check=True, timeout=30)
    python_tag, platform_tag = probe.stdout.split()
    return python_tag, platform_tag


@pytest.fixture(scope="module")
def contained(tmp_path_factory, empty_schema, build_index) -> Iterator[ContainedRun]:
    tmp_path = tmp_path_factory.mktemp("contained")
    dsn = empty_schema()
    db = Database(dsn)
    farm = Farm(tmp_path, dsn, build_index.url)
    token = uuid.uuid4().hex[:12]
    secret = f"piw-secret-{uuid.uuid4().hex}"
    marker = f"PIW-ESCAPEE-{token}"
    payloads = tmp_path / "payloads"
    listener = Listener(payload_wheel(payloads, "piw_evil_payload",
                                      "fetched from loopback").read_bytes())
    planted: Optional[Planted] = None
    python = pyenv_python(SLAVE_PYTHON_MINOR)
    cache_dir = farm.work_root / "cache"
    home = farm.work_root / "home"
    write_dirs = {"tmp": Path("/tmp"), "var-tmp": Path("/var/tmp"), "dev-shm": Path("/dev/shm"),
                  "home": home, "cache": cache_dir,
                  **{f"work-dir-{label}": farm.work_root / f"work-{label}" for label in LABELS}}
    try:
        planted = plant_secrets(farm, secret, token, home)
        cache_dir.mkdir()
        canary = cache_dir / "canary"
        canary_bytes = f"canary {token}\n".encode()
        canary.write_bytes(canary_bytes)
        if farm.user is not None:
            for path in (cache_dir, canary):
                os.chown(path, farm.user.pw_uid, farm.user.pw_gid)
        farm.start_master()
        slaves = {label: farm.start_slave(
            label, python, "--cache-dir", str(cache_dir), "-c", str(planted.files["slave-config"]),
            "--pid-limit", str(PID_LIMIT), "--disk-limit", str(DISK_QUOTA_MIB),
            env_extra={SECRET_VARIABLE: secret, "HOME": str(home)}) for label in LABELS}
        for slave in slaves.values():
            slave.wait_log("connected to the master", 30)
        configs = {
            "connect": {"targets": [
                {"name": "postgres-tcp", "host": "127.0.0.1", "port": 5432, "postgres": True},
                {"name": "postgres-socket", "path": POSTGRES_SOCKET, "postgres": True},
                {"name": "master-jobs", "host": "127.0.0.1", "port": farm.slave_port},
                {"name": "master-files", "host": "127.0.0.1", "port": farm.file_port},
                {"name": "test-listener", "host": "127.0.0.1", "port": listener.port},
                {"name": "upstream-index", "host": "127.0.0.1",
                 "port": int(build_index.base_url.rsplit(":", 1)[1].strip("/"))},
            ]},
            "secrets": {"files": {name: str(path) for name, path in planted.files.items()},
                        "variable": SECRET_VARIABLE,
                        "slave_pids": [slave.proc.pid for slave in slaves.values()]},
            "writes": {"dirs": {name: str(path) for name, path in write_dirs.items()},
                       "token": token, "cache": str(cache_dir)},
            "fork-bomb": {"cap": FORK_BOMB_CAP, "seconds": 20, "child_sleep_s": LINGER_S},
            "escapee": {"sleep_s": LINGER_S, "marker": marker},
            "disk-filler": {"token": token, "cap_bytes": DISK_FILLER_CAP_BYTES},
        }
        secret_wheel = payload_wheel(planted.files["pgpass"].parent / f"piw-test-{token}",
                                     "piw_secret_payload", secret)
        planted.made += [secret_wheel, secret_wheel.parent]
        secret_wheel.parent.chmod(0o700)
        if farm.user is not None:
            for path in (secret_wheel, secret_wheel.parent):
                os.chown(path, farm.user.pw_uid, farm.user.pw_gid)
        url_requires = [
            f"piw-evil-payload @ http://127.0.0.1:{listener.port}/piw_evil_payload-1.0-py3-none-any.whl",
            f"piw-secret-payload @ file://{secret_wheel}",
        ]
        sdists = tmp_path / "sdists"
        queue: list[tuple[str, Path]] = [
            (KIND_BY_NAME[FIRST_KIND].name, make_kind_sdist(sdists, KIND_BY_NAME[FIRST_KIND]))]
        configs["url-requires"] = {"requires": url_requires}
        queue += [(NAME_PREFIX + attack, make_hostile_sdist(sdists, attack, configs[attack]))
                  for attack in ATTACKS]
        queue += [(kind.name, make_kind_sdist(sdists, kind))
                  for kind in KINDS if kind.kind != FIRST_KIND]
        # last, as one of them may stop the slave for good: the wheel-dir traps,
        # then a plain build to show the slave is still building
        queue += [(wheel_trap_name(trick), make_wheel_trap_sdist(
            sdists, trick, {"secret_path": str(planted.files["pgpass"])})) for trick in TRAPS]
        newest = datetime.now(timezone.utc)
        for position, (name, path) in enumerate(queue):
            build_index.add(path)
            db.add_package(name)
            db.add_version(name, "1.0", released=newest - timedelta(minutes=position),
                           has_sdist=True)
        names = [name for name, _ in queue]
        before_traps = names[:-len(TRAPS)]
        # settled: built, or its failures count (a deterministic failure at
        # once, as both slaves are of one image; any other once retried on
        # the other slave)
        def settled(name: str) -> bool:
            found = builds_of(db, name)
            return any(b.status == "success" for b in found) or (
                bool(found) and db.get_versions(name)["1.0"]["built"])

        finished = wait_quietly(
            farm, lambda: all(settled(name) for name in before_traps), RUN_TIMEOUT_S)
        if finished:
            wait_quietly(farm, lambda: all(settled(name) for name in names), TRAPS_TIMEOUT_S)
            wait_quietly(farm, lambda: all(s["state"] in ("idle", "parked", "sleeping")
                                           for s in farm.snapshot()["slaves"]), 30)
        builds = {name: found[-1] for name in names if (found := builds_of(db, name))}
        logs = {name: db.get_build_log(build.build_id) or "" for name, build in builds.items()}
        kept = tmp_path / "build-logs"  # for a look after a failure
        kept.mkdir()
        for name, text in logs.items():
            (kept / f"{name}.txt").write_text(text)
        descendants = {info.pid: cmdline(info.pid) for info in processes.descendants(
            [slave.proc.pid for slave in slaves.values()]) if not info.dead}
        try:
            states = {s["label"]: s["state"] for s in farm.snapshot()["slaves"]}
        except Exception as exc:  # the master's own failure shows in its tests
            states = {"?": f"no snapshot: {exc}"}
        python_tag, platform_tag = slave_facts(python)
        yield ContainedRun(
            token=token, secret=secret,
            slave_pids={label: slave.proc.pid for label, slave in slaves.items()},
            slave_alive={label: slave.proc.poll() is None for label, slave in slaves.items()},
            slave_logs={label: slave.log() for label, slave in slaves.items()},
            slave_states=states, work_root=farm.work_root,
            cache_dir=cache_dir, canary=canary, canary_bytes=canary_bytes, output=farm.output,
            listener_accepted=list(listener.accepted), write_dirs=write_dirs, builds=builds,
            logs=logs, order=names, descendants=descendants, escapees=processes_with(marker),
            index_hashes={path.name: build_index.sha256(path.name)
                          for path in build_index.root.iterdir() if path.is_file()},
            python=python, platform_tag=platform_tag, python_tag=python_tag,
        )
    finally:
        listener.close()
        kill_all(info.pid for info in processes.descendants([s.proc.pid for s in farm.slaves]))
        kill_all(processes_with(marker))
        farm.stop()
        db.close()
        for path in planted.made if planted is not None else []:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for directory in write_dirs.values():
            for name in (f"piw-hostile-{token}", f"piw-filler-{token}"):
                try:
                    (directory / name).unlink()
                except OSError:
                    pass


def timeline(run: ContainedRun) -> str:
    """What the slaves built, in queue order, for a failing assertion's message."""
    lines = []
    for name in run.order:
        build = run.builds.get(name)
        lines.append(f"  {name}: " + (
            f"{build.status} on {build.slave_label} in {build.duration.total_seconds():.1f} s"
            + (f" ({build.reason})" if build.reason else "") if build else "not built"))
    return "\n".join(lines)


def build_of(run: ContainedRun, name: str) -> tuple[object, str]:
    """The build of *name* and its log; the test fails if it was never built."""
    if name not in run.builds:
        pytest.fail(f"{name} was never built; the queue went:\n{timeline(run)}")
    return run.builds[name], run.logs[name]


def hostile(run: ContainedRun, attack: str) -> tuple[object, str, dict[str, Report]]:
    build, log = build_of(run, NAME_PREFIX + attack)
    return build, log, parse_reports(log)


def reported(log: str, reports: dict[str, Report], target: str) -> Report:
    if target not in reports:
        pytest.fail(f"no report for {target}:\n{log[-3000:]}")
    return reports[target]


# --- every attack ----------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_build_ran_and_failed_with_a_reason(contained: ContainedRun, attack: str):
    build, log, reports = hostile(contained, attack)
    if attack not in FETCH_ATTACKS:
        assert attack_started(log, attack), f"the {attack} code never ran:\n{log[-3000:]}"
    assert build.status == "failed", describe(reports)
    assert build.reason, "a failed build needs a reason"
    assert not build.files


def test_every_slave_survived_the_attacks_and_built_on(contained: ContainedRun):
    for label in LABELS:
        assert contained.slave_alive[label], contained.slave_logs[label][-3000:]
        assert "Traceback" not in contained.slave_logs[label]
        assert contained.slave_states.get(label) in ("idle", "parked", "sleeping"), \
            f"{label} is {contained.slave_states.get(label)}; the queue went:\n{timeline(contained)}"
    # each slave that took an attack built something after it, successfully
    attacks = [NAME_PREFIX + attack for attack in ATTACKS]
    later = contained.order[1 + len(ATTACKS):]
    for label in LABELS:
        took = [build_of(contained, name)[0] for name in attacks
                if contained.builds.get(name) and contained.builds[name].slave_label == label]
        if not took:
            continue
        last = max(build.started for build in took)
        after = [contained.builds[name] for name in later if name in contained.builds
                 and contained.builds[name].slave_label == label
                 and contained.builds[name].started > last]
        assert any(build.status == "success" for build in after), \
            f"{label} built nothing after its last attack:\n{timeline(contained)}"
    final, log = build_of(contained, wheel_trap_name("none"))
    assert final.status == "success", f"{final.reason}\n{log[-3000:]}"


def test_nothing_of_a_build_survives_it(contained: ContainedRun):
    assert contained.descendants == {}, "processes left below the slave"
    assert contained.escapees == {}, "the setsid + execve(env={}) escapee outlived its build"
    leftovers = [path for path in contained.work_root.rglob("piw-build-*")]
    assert leftovers == []


# --- connecting ------------------------------------------------------------------------


@pytest.mark.parametrize("target", CONNECT_TARGETS)
def test_a_build_reaches_no_port(contained: ContainedRun, target: str):
    _, log, reports = hostile(contained, "connect")
    assert not reported(log, reports, target).managed, describe(reports, target)
    if target == "test-listener":
        assert [data for data in contained.listener_accepted if b"PIW-HOSTILE" in data] == []


@pytest.mark.parametrize("target", ("loopback url", "file url"))
def test_build_requirements_come_from_the_index_only(contained: ContainedRun, target: str):
    _, log, reports = hostile(contained, "url-requires")
    if target in reports:
        assert not reports[target].managed, describe(reports, target)
    if target == "loopback url":
        assert [data for data in contained.listener_accepted if b"piw_evil" in data] == []


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", SECRET_TARGETS)
def test_a_build_reads_no_secret_of_the_slave(contained: ContainedRun, target: str):
    _, log, reports = hostile(contained, "secrets")
    assert not reported(log, reports, target).managed, describe(reports, target)


def test_no_log_or_published_file_holds_the_secret(contained: ContainedRun):
    secret = contained.secret.encode()
    assert [name for name, log in contained.logs.items() if contained.secret in log] == []
    published = [path for path in contained.output.rglob("*") if path.is_file()]
    assert any(path.suffix == ".gz" for path in published), "no published logs to look in"
    leaked = [path for path in published
              if secret in (gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                            else path.read_bytes())]
    assert leaked == []


# --- writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", WRITE_TARGETS)
def test_what_a_build_writes_does_not_survive(contained: ContainedRun, target: str):
    _, log, reports = hostile(contained, "writes")
    reported(log, reports, target)
    path = contained.write_dirs[target] / f"piw-hostile-{contained.token}"
    assert not path.exists(), describe(reports, target)


def test_a_build_cannot_poison_the_shared_cache(contained: ContainedRun):
    _, log, reports = hostile(contained, "writes")
    reported(log, reports, "cache files")
    assert contained.canary.read_bytes() == contained.canary_bytes, describe(reports, "cache files")
    marked = [path for root in (contained.cache_dir, contained.work_root)
              for prefix in ("piw-hostile-", "piw-filler-")
              for path in root.rglob(f"{prefix}{contained.token}")]
    assert marked == []
    # every file of the index the slave keeps is the index's, byte for byte
    kept = [path for path in contained.cache_dir.rglob("*")
            if path.is_file() and path.name in contained.index_hashes]
    changed = [path for path in kept if hashlib.sha256(path.read_bytes()).hexdigest()
               != contained.index_hashes[path.name]]
    assert changed == []


# --- limits ----------------------------------------------------------------------------


def test_the_pid_limit_stops_a_fork_bomb(contained: ContainedRun):
    _, log, reports = hostile(contained, "fork-bomb")
    report = reports.get("processes")
    if report is None:  # killed before it could say
        assert not attack_finished(log, "fork-bomb"), log[-3000:]
    else:
        assert not report.managed, describe(reports)
        # about the limit: RLIMIT_NPROC counts every process of the build user,
        # so the other slave's builds ending lend this one a few more
        started = int(report.detail.split()[1])
        assert started <= 2 * PID_LIMIT, describe(reports)


@pytest.mark.parametrize("place", FILLER_PLACES)
def test_the_disk_quota_stops_a_disk_filler(contained: ContainedRun, place: str):
    build, log, reports = hostile(contained, "disk-filler")
    if place in reports:
        assert not reports[place].managed, describe(reports, place)
    else:  # killed before it came to this place: the slave must say why
        assert not attack_finished(log, "disk-filler"), describe(reports)
        assert "quota" in build.reason or "limit" in build.reason, build.reason
    for directory in ("/tmp", "/var/tmp", "/dev/shm", contained.write_dirs["home"]):
        assert not (Path(directory) / f"piw-filler-{contained.token}").exists()


# --- the wheel directory ---------------------------------------------------------------


@pytest.mark.parametrize("trick", [trick for trick in TRAPS if trick != "none"])
def test_a_trap_in_the_wheel_dir_neither_stops_the_slave_nor_gets_sent(
        contained: ContainedRun, trick: str):
    build, log = build_of(contained, wheel_trap_name(trick))
    reports = parse_reports(log)
    assert reported(log, reports, trick).managed, "the trap was not set: the test proves nothing"
    genuine = f"{wheel_trap_name(trick).replace('-', '_')}-1.0-py3-none-any.whl"
    if build.status == "success":
        assert [f.filename for f in build.files] == [genuine]
    else:
        assert build.reason
    published = contained.output / "simple" / wheel_trap_name(trick)
    assert sorted(path.name for path in published.glob("*.whl")) == (
        [genuine] if build.status == "success" else [])


# --- the real-world kinds --------------------------------------------------------------


@pytest.mark.parametrize("kind", [kind.kind for kind in KINDS])
def test_a_real_world_kind_builds_in_the_sandbox(contained: ContainedRun, kind: str,
                                                 tmp_path: Path):
    spec = KIND_BY_NAME[kind]
    build, log = build_of(contained, spec.name)
    assert build.status == "success", f"{build.reason}\n{log[-4000:]}"
    (wheel,) = build.files
    assert wheel.filename == spec.wheel_name("1.0", contained.python_tag, contained.platform_tag)
    published = contained.output / "simple" / spec.name / wheel.filename
    assert published.exists()
    # the wheel works: unpacked and imported by the interpreter it was built for
    with zipfile.ZipFile(published) as archive:
        archive.extractall(tmp_path)
    check = ("print(m.answer())" if spec.compiled else "print(m.ANSWER)")
    done = subprocess.run(
        [contained.python, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import {spec.module} as m; {check}"],
        capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "42", done.stderr
