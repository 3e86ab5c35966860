"""Startup and bad input that tell the truth: real piw-master, piw-initdb and admin tools.

Every case runs the real program as a subprocess and asserts what an
operator sees: a non-zero exit, exactly one line on stderr saying why, and
no traceback.  A master that cannot start must say so before it tells
systemd it is ready: each master here gets a real unix datagram socket as
``NOTIFY_SOCKET``, which must stay silent.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import msgpack
import pytest
import sqlalchemy as sa
import zmq
from farm import BIN, Farm, free_port, pyenv_python

from piwheels.initdb import initdb
from piwheels.protocols import CONTROL
from piwheels.transport import Socket

#: no case may take longer than this (a hang is a failure, not a wait)
TIMEOUT_S = 30


def run(program: str, *args: str, env: Optional[dict] = None,
        timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / program), *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """A non-zero exit whose stderr ends in the one error line, holding every
    *expected* text; that line.  (A daemon may have logged what it did before
    it failed, e.g. the build policy in force: those are not errors.)"""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    errors = [line for line in lines if re.match(r"(\S+: )?error: ", line)]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


class NotifySocket:
    """A socket standing in for systemd's: what a daemon tells it is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def said(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def master_args(tmp_path: Path, dsn: str, **overrides: str) -> list[str]:
    options = {
        "--dsn": dsn, "--output-path": str(tmp_path / "output"),
        "--pypi-simple": "http://127.0.0.1:9/simple/",
        "--slave-bind": f"tcp://127.0.0.1:{free_port()}",
        "--file-bind": f"tcp://127.0.0.1:{free_port()}",
        "--control-address": f"ipc://{tmp_path}/control",
        "--status-address": f"ipc://{tmp_path}/status",
    }
    options.update(overrides)
    return [arg for pair in options.items() for arg in pair]


# --- piw-master: what stops it from starting ---------------------------------------

def _a_file(tmp_path: Path) -> dict:
    (tmp_path / "plain-file").write_text("not a directory")
    return {"--output-path": str(tmp_path / "plain-file")}


def _simple_is_a_file(tmp_path: Path) -> dict:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "simple").write_text("")
    return {"--output-path": str(tmp_path / "out")}


def _transfers_is_a_file(tmp_path: Path) -> dict:
    # found by the file receiver in its own thread, as it starts
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".transfers").write_text("")
    return {"--output-path": str(tmp_path / "out")}


#: what a case holds open (a port, a socket) until its master has been run
_held: list = []


def _listening(port: int) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    _held.append(sock)


def _slave_port_in_use(tmp_path: Path) -> dict:
    port = free_port()
    _listening(port)
    return {"--slave-bind": f"tcp://127.0.0.1:{port}"}


def _file_port_in_use(tmp_path: Path) -> dict:
    port = free_port()
    _listening(port)
    return {"--file-bind": f"tcp://127.0.0.1:{port}"}


def _control_socket_in_use(tmp_path: Path) -> dict:
    # another master (here a plain ZeroMQ listener) already answers there
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(f"ipc://{tmp_path}/taken")
    _held.append(sock)
    return {"--control-address": f"ipc://{tmp_path}/taken"}


MASTER_CASES: dict[str, tuple[Callable[[Path], dict], tuple[str, ...]]] = {
    "output path is a file": (_a_file, ("plain-file is not a directory",)),
    "output path under a place nothing can be made": (
        lambda _: {"--output-path": "/proc/piwheels-output"},
        ("--output-path /proc/piwheels-output cannot be used",)),
    "output path unwritable": (lambda _: {"--output-path": "/proc"},
                               ("--output-path /proc cannot be used", "cannot write in /proc")),
    "simple/ is a file": (_simple_is_a_file, ("cannot be used", "simple")),
    ".transfers is a file": (_transfers_is_a_file, ("cannot be used", ".transfers")),
    "slave bind garbage": (lambda _: {"--slave-bind": "garbage"},
                           ("--slave-bind 'garbage' is not a ZeroMQ address", "tcp://")),
    "slave port in use": (_slave_port_in_use, ("cannot listen on", "Address already in use")),
    "file port in use": (_file_port_in_use, ("cannot listen on", "Address already in use")),
    "file bind with no port": (lambda _: {"--file-bind": "tcp://127.0.0.1"},
                               ("--file-bind 'tcp://127.0.0.1' is not a ZeroMQ address",)),
    "control socket taken by a running master": (
        _control_socket_in_use, ("cannot listen on", "another process")),
    "control socket where no directory can be made": (
        lambda _: {"--control-address": "ipc:///proc/piwheels/control"},
        ("cannot listen on 'ipc:///proc/piwheels/control'",)),
    "status bind garbage": (lambda _: {"--status-address": "nonsense://x"},
                            ("--status-address 'nonsense://x' is not a ZeroMQ address",)),
    "unresolvable database host": (
        lambda _: {"--dsn": "postgresql://piwheels@no-such-host.invalid/piwheels"},
        ("cannot connect to the database", "no-such-host.invalid")),
    "nothing listens on the database port": (
        lambda _: {"--dsn": f"postgresql://postgres@127.0.0.1:{free_port()}/piwheels"},
        ("cannot connect to the database", "refused")),
    "the database refuses the role": (
        lambda _: {"--dsn": "postgresql://no_such_role_piw@127.0.0.1:5432/postgres"},
        ("cannot connect to the database", "no_such_role_piw")),
    "a database URL that is not one": (lambda _: {"--dsn": "garbage"},
                                       ("cannot parse database URL",)),
    "not PostgreSQL": (lambda _: {"--dsn": "sqlite:///x.db"}, ("needs PostgreSQL",)),
}


@pytest.mark.parametrize("case", MASTER_CASES)
def test_a_master_that_cannot_start_says_why_in_one_line_before_ready(
        case, tmp_path, master_dsn, notify):
    make, expected = MASTER_CASES[case]
    try:
        overrides = make(tmp_path)
        started = time.monotonic()
        result = run("piw-master", *master_args(tmp_path, master_dsn, **overrides),
                     env={"NOTIFY_SOCKET": str(notify.path)})
    finally:
        for held in _held:
            held.close()
        _held.clear()
    line = assert_one_line_error(result, *expected)
    assert line.startswith("error: ")
    assert time.monotonic() - started < 20  # it says so at once; it does not hang
    assert "READY=1" not in notify.said()


def test_a_master_that_can_start_tells_the_notify_socket_so(tmp_path, master_dsn, notify):
    """The positive control for the cases above: READY does arrive on this socket."""
    proc = subprocess.Popen([str(BIN / "piw-master"), *master_args(tmp_path, master_dsn)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": str(notify.path)})
    try:
        deadline = time.monotonic() + TIMEOUT_S
        said: list[str] = []
        while "READY=1" not in said and time.monotonic() < deadline:
            said += notify.said()
            time.sleep(0.1)
        assert "READY=1" in said
    finally:
        proc.terminate()
        _, err = proc.communicate(TIMEOUT_S)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_database_without_the_schema_stops_the_master_in_one_line(
        tmp_path, empty_database, notify):
    result = run("piw-master", *master_args(tmp_path, empty_database),
                 env={"NOTIFY_SOCKET": str(notify.path)})
    assert_one_line_error(result, "piw-initdb")
    assert "READY=1" not in notify.said()


# --- piw-initdb ---------------------------------------------------------------------

INITDB_CASES = {
    "unresolvable host": (["--dsn", "postgresql://postgres@no-such-host.invalid/x"],
                          ("cannot connect to the database", "no-such-host.invalid")),
    "nothing listens": (["--dsn", "postgresql://postgres@127.0.0.1:1/x"],
                        ("cannot connect to the database",)),
    "a role the server refuses": (["--dsn", "postgresql://no_such_role_piw@127.0.0.1/x"],
                                  ("cannot connect to the database", "no_such_role_piw")),
    "a URL that is not one": (["--dsn", "garbage"], ("cannot parse database URL",)),
    "a missing master role": (["--user", "no_such_role_piw"], ("does not exist",)),
    "an option without its value": (["--dsn"], ("expected one argument",)),
    "an unknown option": (["--no-such-option"], ("unrecognized arguments",)),
}


MONITOR_CASES = {
    "not on a terminal": ([], ("draws on a terminal",)),
    "a negative request timeout": (["--request-timeout", "-1"], ("request-timeout",)),
    "an unknown option": (["--no-such-option"], ("unrecognized arguments",)),
}


@pytest.mark.parametrize("case", MONITOR_CASES)
def test_monitor_errors_are_one_line(case, tmp_path):
    args, expected = MONITOR_CASES[case]
    assert_one_line_error(run("piw-monitor", "--control-address", f"ipc://{tmp_path}/c",
                              *args), *expected)


@pytest.mark.parametrize("case", INITDB_CASES)
def test_initdb_errors_are_one_line(case, empty_database):
    args, expected = INITDB_CASES[case]
    if "--dsn" not in args:
        args = ["--dsn", empty_database, *args]
    assert_one_line_error(run("piw-initdb", "-y", "--user", "postgres", *args), *expected)


# --- the admin tools against a running master --------------------------------------

LONG = "x" * 300
SKIP_TOO_LONG = "r" * 150


@pytest.fixture
def running_master(tmp_path, master_dsn):
    farm = Farm(tmp_path, master_dsn, "http://127.0.0.1:9/simple/")
    try:
        farm.start_master()
        yield farm
    finally:
        farm.stop()


def admin_cases(tmp_path: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    garbage = tmp_path / "garbage-1.0-py3-none-any.whl"
    garbage.write_bytes(b"not a zip")
    misnamed = tmp_path / "not-a-wheel.whl"
    misnamed.write_bytes(b"")
    return {
        "add an empty name": (["piw-add", ""], ("PACKAGE", "1..200")),
        "add a 300-character name": (["piw-add", LONG], ("PACKAGE", "1..200")),
        "add a name that is no name": (["piw-add", "bad name!"], ("bad name!",)),
        "add a version that is no version": (["piw-add", "foo", "not a version"],
                                             ("not a version",)),
        "add a 300-character version": (["piw-add", "foo", LONG], ("VERSION", "1..200")),
        "skip for no reason": (["piw-add", "foo", "--skip", " "], ("--skip needs a REASON",)),
        "skip a project for too long a reason": (["piw-add", "foo", "--skip", SKIP_TOO_LONG],
                                                 ("--skip", "0..100")),
        "skip a release for too long a reason": (
            ["piw-add", "foo", "1.0", "--skip", SKIP_TOO_LONG], ("--skip", "0..100")),
        "yank for too long a reason": (["piw-add", "foo", "1.0", "--yank", "y" * 600],
                                       ("--yank", "0..500")),
        "an empty alias": (["piw-add", "foo", "--alias", ""], ("--alias", "1..200")),
        "an alias that is no name": (["piw-add", "foo", "--alias", "x-"], ("x-",)),
        "an unknown status": (["piw-add", "foo", "--status", "bogus"], ("bogus",)),
        "a status reason too long": (
            ["piw-add", "foo", "--status", "deprecated", "--status-reason", "s" * 600],
            ("--status-reason", "0..500")),
        "a status for a release": (["piw-add", "foo", "1.0", "--status", "archived"],
                                   ("whole project",)),
        "yank without a version": (["piw-add", "foo", "--yank"], ("need a VERSION",)),
        "remove what is not there": (["piw-remove", "-y", "not-there"], ("not-there",)),
        "remove an empty name": (["piw-remove", "-y", ""], ("PACKAGE", "1..200")),
        "remove and skip for too long a reason": (
            ["piw-remove", "-y", "foo", "--skip", SKIP_TOO_LONG], ("--skip", "0..100")),
        "rebuild a name that is no name": (["piw-rebuild", "--no-wait", "project", "bad name!"],
                                           ("bad name!",)),
        "rebuild a 300-character name": (["piw-rebuild", "--no-wait", "project", LONG],
                                         ("PKG", "1..200")),
        "rebuild a part for a project": (["piw-rebuild", "--no-wait", "home", "foo"],
                                         ("PKG goes with 'project' only",)),
        "rebuild an unknown part": (["piw-rebuild", "--no-wait", "everything"],
                                    ("invalid choice",)),
        "import a file that is not there": (["piw-import", "/nonexistent.whl"],
                                            ("/nonexistent.whl", "no such file")),
        "import a directory": (["piw-import", str(tmp_path)], ("not a file",)),
        "import a file with no wheel name": (["piw-import", str(misnamed)],
                                             ("not-a-wheel.whl",)),
        "import garbage named like a wheel": (["piw-import", str(garbage)],
                                              ("garbage-1.0-py3-none-any.whl",)),
        "import under a 150-character ABI": (["piw-import", "--abi", "a" * 150, str(garbage)],
                                             ("--abi", "1..100")),
        "import under an empty label": (["piw-import", "--label", "", str(garbage)],
                                        ("--label", "1..100")),
        "min-free-space 10**30": (["piw-control", "min-free-space", str(10**30)],
                                  ("min-free-space", "at most 8796093022207")),
        "min-free-space below zero": (["piw-control", "min-free-space", "-1"],
                                      ("min-free-space", "0 or more")),
        "min-free-space not a number": (["piw-control", "min-free-space", "lots"],
                                        ("min-free-space", "whole number")),
        "pause with a number": (["piw-control", "pause", "5"], ("pause takes no value",)),
        "an unknown action": (["piw-control", "explode"], ("invalid choice",)),
        "a project for an action of the farm's": (["piw-control", "pause", "--project", "foo"],
                                                  ("--project goes with build-policy",)),
        "a control address that is no address": (
            ["piw-add", "--control-address", "garbage", "foo"],
            ("--control-address 'garbage'", "tcp://HOST:PORT")),
        "a master that is not there": (
            ["piw-control", "--control-address", f"ipc://{tmp_path}/nobody", "--request-timeout",
             "0.5", "pause"], ("did not answer",)),
        "a negative request timeout": (["piw-control", "--request-timeout", "-1", "pause"],
                                       ("request-timeout",)),
    }


def test_admin_tools_answer_bad_input_in_one_line_and_change_nothing(
        running_master, tmp_path, schema_database):
    control = ["--control-address", running_master.control_address]
    cases = admin_cases(tmp_path)
    for case, (command, expected) in cases.items():
        program, *args = command
        if "--control-address" not in args:
            args = [*control, *args]
        result = run(program, *args)
        try:
            assert_one_line_error(result, *expected)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None
    assert running_master.master.proc.poll() is None, "the master stopped"
    ok = run("piw-control", *control, "pause")
    assert ok.returncode == 0 and "paused" in ok.stdout, ok.stderr
    engine = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM packages")) == 0
            assert conn.scalar(sa.text("SELECT count(*) FROM package_names")) == 0
    finally:
        engine.dispose()
    assert "Traceback" not in running_master.master.log()


def raw_request(address: str, name: str, payload: dict, timeout_s: float = 10) -> tuple:
    """Send a control request the client's own schema check would have stopped."""
    ctx = zmq.Context.instance()
    sock = Socket.make(ctx, zmq.DEALER, CONTROL)
    try:
        sock.connect(address)
        sock.zsocket.send(msgpack.packb([name, payload], use_bin_type=True))
        assert sock.zsocket.poll(int(timeout_s * 1000)), "the master did not answer"
        return sock.recv()
    finally:
        sock.close()


def test_the_master_refuses_a_skip_reason_its_column_cannot_hold_and_logs_it_once(
        running_master, db):
    add = {"package": "foo", "version": None, "skip": SKIP_TOO_LONG, "unskip": False,
           "yank": False, "yank_reason": None, "unyank": False, "alias": None}
    for _ in range(5):
        reply, answer = raw_request(running_master.control_address, "ADD", add)
        assert reply == "ERROR"
        assert "skip" in answer["message"] and "0..100" in answer["message"]
    assert db.get_project("foo") is None
    # it still serves, and said it refused, once, however often it was asked
    reply, _ = raw_request(running_master.control_address, "ADD", {**add, "skip": "fits"})
    assert reply == "OK"
    assert db.get_project("foo").skip_reason == "fits"
    assert running_master.master.log().count("refused a bad control message") == 1


def test_what_the_database_refuses_is_answered_and_the_master_carries_on(
        tmp_path, postgres, master_role):
    """The schema lets a value through that the database refuses (here a column
    narrowed behind the code's back): the master answers with the reason."""
    name = postgres.create_database()
    superuser = postgres.dsn(name)
    with open(os.devnull, "w") as quiet:
        initdb(superuser, master_role, assume_yes=True, out=quiet)
    engine = sa.create_engine(superuser, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE packages ALTER COLUMN skip_reason TYPE varchar(10)")
        farm = Farm(tmp_path, postgres.dsn(name, master_role), "http://127.0.0.1:9/simple/")
        try:
            farm.start_master()
            control = ["--control-address", farm.control_address]
            for _ in range(3):
                result = run("piw-add", *control, "foo", "--skip", "longer than ten")
                assert_one_line_error(result, "value too long")
            ok = run("piw-add", *control, "foo", "--skip", "short")
            assert ok.returncode == 0, ok.stderr
            assert farm.master.proc.poll() is None
            log = farm.master.log()
            assert log.count("refused ADD") == 1 and "Traceback" not in log
        finally:
            farm.stop()
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT skip_reason FROM packages")) == "short"
    finally:
        engine.dispose()


# --- PostgreSQL drops the master's connections while it records builds -------------

def _superuser_rows(dsn: str, sql: str, **params) -> list:
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


class BackendKiller(threading.Thread):
    """Terminates every backend of *role* in *database* every *interval_s* (while not held).

    pg_terminate_backend as the superuser: what a PostgreSQL restart does to
    the master's connections, without restarting the machine's shared server.
    """

    def __init__(self, superuser_dsn: str, role: str, interval_s: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(superuser_dsn, poolclass=sa.pool.NullPool)
        self.role = role
        self.interval_s = interval_s
        self.held = threading.Event()
        self.done = threading.Event()
        self.terminated = 0

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            if self.held.is_set():
                continue
            with self.engine.connect() as conn:
                self.terminated += sum(conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = :role"),
                    {"role": self.role}).scalars())

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self.engine.dispose()


def test_connections_lost_while_recording_builds_lose_nothing(
        farm, release, schema_database, master_role):
    """The master either carries on (a lost idle connection is replaced) or exits
    non-zero with one line for systemd; restarted, every build is there, once,
    with its file, and no file is without its row."""
    names = [f"piw-lost-{n}" for n in range(4)]
    for name in names:
        release(name, kind="pure")
    superuser = schema_database["superuser"]
    farm.start_master()
    farm.start_slave("steady", pyenv_python("11"))
    killer = BackendKiller(superuser, master_role)
    exits: list[tuple[int, str]] = []
    recorded_sql = "SELECT count(DISTINCT package) FROM builds WHERE package LIKE 'piw-lost-%'"
    try:
        killer.start()
        deadline = time.monotonic() + 240
        while _superuser_rows(superuser, recorded_sql)[0][0] < len(names):
            assert time.monotonic() < deadline, f"builds not all recorded; exits: {exits}"
            if farm.master.proc.poll() is not None:
                farm.master.expected_exit = True
                exits.append((farm.master.proc.returncode, farm.master.log()))
                killer.held.set()  # let it start (a start that fails is proven above)
                farm.start_master()
                killer.held.clear()
            time.sleep(0.3)
    finally:
        killer.stop()
    assert killer.terminated > 0
    for returncode, log in exits:
        assert returncode != 0
        assert "Traceback" not in log, log[-3000:]
        reasons = [line for line in log.splitlines() if "stopping: task" in line]
        assert len(reasons) == 1 and "database" in reasons[0], reasons
    farm.stop()
    builds = _superuser_rows(
        superuser, "SELECT package, status FROM builds WHERE package LIKE 'piw-lost-%'")
    assert sorted(builds) == [(name, "success") for name in names]  # each once, none failed
    rows = {filename: sha for filename, sha in _superuser_rows(
        superuser, "SELECT f.filename, f.filehash FROM files f JOIN builds b USING (build_id) "
                   "WHERE b.package LIKE 'piw-lost-%'")}
    on_disk = {path.name: path for name in names
               for path in (farm.output / "simple" / name).glob("*.whl")}
    assert set(rows) == set(on_disk)  # every row its file, every file its row
    for filename, path in on_disk.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rows[filename]
    transfers = farm.output / ".transfers"
    assert not transfers.exists() or not any(transfers.iterdir())
