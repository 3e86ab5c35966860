"""Running a real farm in tests: piw-master and piw-slave as subprocesses.

Slaves refuse to run as root, so when the tests run as root the slaves run as
an unprivileged build user (``PIWHEELS_TEST_BUILD_USER``, default
``piwbuild``; .ci/run creates it).

A farm uses CURVE keys unless told not to: the master has a key pair, and
each slave started gets one of its own, enrolled before it starts (pass
``enrol=False`` for one the master must refuse).  Hand-driven slaves get keys
from :meth:`Farm.curve_client` / :meth:`Farm.secure`.

Farm slaves skip what costs every build seconds but only some tests are
about: the smoke test (``--no-smoke-test``) and the Debian package look-up of
a failed build (``--lookup-timeout 0``).  A test about either asks for it
(``start_slave(..., smoke=True, lookup=True)``).
"""

from __future__ import annotations

import atexit
import os
import pwd
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

import zmq

from packaging.tags import sys_tags

from piwheels.control_client import ControlClient
from piwheels.keys import PUBLIC_SUFFIX, load_key_pair, make_key_pair, public_path
from piwheels.transport import CurveClient

BIN = Path(sys.executable).parent
BUILD_USER = os.environ.get("PIWHEELS_TEST_BUILD_USER", "piwbuild")
PYENV = Path("/root/.pyenv/versions")

T = TypeVar("T")


def _host_platform() -> str:
    """The plain platform tag of this interpreter's own tags, as piw-slave derives it
    (the last tags of sys_tags are py3x-none-any: 'any' is no platform)."""
    every = list(sys_tags())
    first = every[0]
    own = [t.platform for t in every if (t.interpreter, t.abi) == (first.interpreter, first.abi)]
    return [p for p in own if not p.startswith(("manylinux", "musllinux"))][-1]


#: The platform this machine's slaves build for (as a slave derives it: the plain
#: platform tag packaging.tags gives its interpreter, not a manylinux one).
HOST_PLATFORM = _host_platform()


def host_target(abi_tag: str) -> tuple[str, str]:
    """The build target of a slave of *abi_tag* on this machine."""
    return (abi_tag, HOST_PLATFORM)

#: What a hand-driven test slave says in HELLO about its builds (it runs none;
#: test masters require contained builds, as masters on Linux do by default)
CLAIMED_CONTAINMENT = "bwrap (claimed by a hand-driven test slave)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pyenv_python(minor: str) -> str:
    """The pyenv CPython 3.<minor> interpreter (e.g. "12")."""
    for version in sorted(PYENV.glob(f"3.{minor}.*")):
        python = version / "bin" / f"python3.{minor}"
        if python.exists():
            return str(python)
    raise RuntimeError(f"CPython 3.{minor} is not installed under {PYENV}")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str,
             interval_s: float = 0.2) -> T:
    """Poll *condition* until it returns something true; fail the test after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def recv(sock, timeout_s: float = 5) -> tuple[str, dict]:
    """The next message on a transport Socket; fail the test if none comes in time."""
    assert sock.zsocket.poll(int(timeout_s * 1000)), "nothing received"
    return sock.recv()


def task_failure(supervisor) -> Optional[str]:
    """The error of the first FAILED waiting on a test's supervisor socket (STARTED is
    each task's word that it is running), or None."""
    while supervisor.zsocket.poll(0):
        name, payload = supervisor.recv()
        if name == "FAILED":
            return payload["error"]
    return None


def build_user() -> Optional[pwd.struct_passwd]:
    """The user slaves run as, or None to run them as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(BUILD_USER)
    except KeyError:
        raise RuntimeError(
            f"the tests run as root but slaves refuse root; create the build user with "
            f"`useradd --system --create-home {BUILD_USER}` (.ci/run does) or set "
            f"PIWHEELS_TEST_BUILD_USER") from None


def builds_of(db, package: str):
    project = db.get_project(package)
    return [b for v in project.versions for b in v.builds] if project else []


def kill_processes_under(root: Path) -> None:
    """SIGKILL every process working in *root*: builds orphaned by a killed slave
    run in their own sessions (and other farms on this machine are left alone)."""
    root = str(root.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


class Process:
    """A piwheels daemon under test, its output kept in a log file."""

    def __init__(self, args: list[str], log_path: Path, *,
                 user: Optional[pwd.struct_passwd] = None, env: Optional[dict] = None) -> None:
        self.args = args
        self.log_path = log_path
        self.expected_exit = False
        self._log = open(log_path, "ab")
        kwargs = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, **kwargs,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float) -> None:
        wait_for(lambda: text in self.log(), timeout_s, f"{text!r} in {self.log_path.name}")

    def kill(self) -> None:
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> int:
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


_SHARED_CACHE: Optional[Path] = None


def shared_slave_cache(user: Optional[pwd.struct_passwd]) -> Path:
    """One --cache-dir for every farm slave of this test run, as a real slave keeps
    one across its builds: the build requirements fetched by the first farm's
    slaves serve the later farms' (pip download costs a couple of seconds)."""
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        _SHARED_CACHE = Path(tempfile.mkdtemp(prefix="piw-farm-cache-"))
        _SHARED_CACHE.chmod(0o755)
        if user is not None:
            os.chown(_SHARED_CACHE, user.pw_uid, user.pw_gid)
        atexit.register(shutil.rmtree, _SHARED_CACHE, True)
    return _SHARED_CACHE


class Farm:
    """One master and any number of slaves for a test, all stopped at the end."""

    def __init__(self, tmp_path: Path, master_dsn: str, index_url: str, *,
                 keys: bool = True) -> None:
        self.tmp_path = tmp_path
        self.master_dsn = master_dsn
        self.index_url = index_url
        self.output = tmp_path / "output"
        self.slave_port = free_port()
        self.file_port = free_port()
        self.control_address = f"ipc://{tmp_path}/control"
        self.status_address = f"ipc://{tmp_path}/status"
        self.master: Optional[Process] = None
        self.slaves: list[Process] = []
        self.user = build_user()
        # the build user cannot reach pytest's private temp tree
        self.work_root = Path(tempfile.mkdtemp(prefix="piw-farm-"))
        self.work_root.chmod(0o755)
        self.keys_dir = self.work_root / "keys"
        self.master_key: Optional[Path] = None
        self.enrolled = self.keys_dir / "authorized"
        if keys:
            self.master_key = self.keys_dir / "master.key_secret"
            self.master_pair, self.master_public = make_key_pair(self.master_key)
            self.enrolled.mkdir(mode=0o755)

    def key_args(self) -> list[str]:
        """The master's key options (none for a farm without keys)."""
        if self.master_key is None:
            return []
        return ["--master-key", str(self.master_key), "--authorized-keys", str(self.enrolled)]

    def slave_key(self, label: str, *, enrol: bool = True) -> Path:
        """A key pair for slave *label* (readable by the build user only), enrolled
        on the master unless not *enrol*; the secret key file."""
        secret = self.keys_dir / f"slave-{label}" / f"{label}.key_secret"
        if not secret.exists():
            make_key_pair(secret)
            if self.user is not None:
                for path in (secret.parent, secret, public_path(secret)):
                    os.chown(path, self.user.pw_uid, self.user.pw_gid)
        if enrol:
            shutil.copyfile(public_path(secret),
                            self.enrolled / f"{label}{PUBLIC_SUFFIX}")
        return secret

    def key_id(self, label: str) -> str:
        """The id of slave *label*'s key (made by :meth:`slave_key`)."""
        return load_key_pair(self.slave_key(label, enrol=False)).key_id

    def revoke(self, label: str) -> None:
        (self.enrolled / f"{label}{PUBLIC_SUFFIX}").unlink()

    def curve_client(self, label: str, *, enrol: bool = True) -> Optional[CurveClient]:
        """Keys for a hand-driven slave's transport sockets (None: a farm without keys)."""
        if self.master_key is None:
            return None
        return CurveClient(keys=load_key_pair(self.slave_key(label, enrol=enrol)),
                           server_public=self.master_pair.public)

    def secure(self, zsocket: zmq.Socket, label: str, *, enrol: bool = True) -> zmq.Socket:
        """Give a raw ZeroMQ socket slave *label*'s keys (before it connects)."""
        client = self.curve_client(label, enrol=enrol)
        if client is not None:
            zsocket.curve_secretkey = client.keys.secret
            zsocket.curve_publickey = client.keys.public
            zsocket.curve_serverkey = client.server_public
        return zsocket

    def start_master(self, *extra: str) -> Process:
        self.master = Process([
            str(BIN / "piw-master"), "-v", "--dsn", self.master_dsn,
            "--output-path", str(self.output), "--pypi-simple", self.index_url,
            "--slave-bind", f"tcp://127.0.0.1:{self.slave_port}",
            "--file-bind", f"tcp://127.0.0.1:{self.file_port}",
            "--heartbeat-interval", "0.5", "--slave-liveness", "4",
            "--sleep-interval", "0.5", "--queue-interval", "1",
            "--transfer-timeout", "2", "--control-address", self.control_address,
            "--status-address", self.status_address, "--min-free-space", "1",
            "--stats-interval", "1", *self.key_args(), *extra,
        ], self.tmp_path / f"master-{len(self.slaves)}-{time.monotonic_ns()}.log")
        self.master.wait_log("master started", 30)
        return self.master

    def start_slave(self, label: str, python: str, *extra: str, enrol: bool = True,
                    keyed: bool = True, env_extra: Optional[dict[str, str]] = None,
                    smoke: bool = False, lookup: bool = False) -> Process:
        """A piw-slave working in its own dir under the work root, with a key of its
        own (enrolled unless not *enrol*; none at all unless *keyed*); *env_extra*
        adds to its (otherwise minimal) environment.  It smoke-tests its wheels only
        if *smoke*, and names the Debian package a failed build lacks only if *lookup*
        (each costs seconds a build)."""
        work = self.work_root / f"work-{label}"
        work.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if self.user is not None:
            os.chown(work, self.user.pw_uid, self.user.pw_gid)
            env["HOME"] = self.user.pw_dir
        env.update(env_extra or {})
        slave = Process([
            str(BIN / "piw-slave"), "-v", "--master", "127.0.0.1",
            "--slave-port", str(self.slave_port), "--file-port", str(self.file_port),
            "--label", label, "--dir", str(work), "--python", python,
            "--cache-dir", str(shared_slave_cache(self.user)),
            *(() if smoke else ("--no-smoke-test",)),
            *(() if lookup else ("--lookup-timeout", "0")),
            *(self.slave_key_args(label, enrol=enrol) if keyed else []), *extra,
        ], self.tmp_path / f"slave-{label}-{time.monotonic_ns()}.log", user=self.user, env=env)
        self.slaves.append(slave)
        return slave

    def slave_key_args(self, label: str, *, enrol: bool = True) -> list[str]:
        """A slave's key options (none for a farm without keys)."""
        if self.master_key is None:
            return []
        return ["--slave-key", str(self.slave_key(label, enrol=enrol)),
                "--master-public-key", str(self.master_public)]

    def stop(self) -> None:
        for slave in self.slaves:
            slave.stop()
        if self.master is not None:
            self.master.stop()
        kill_processes_under(self.work_root)
        shutil.rmtree(self.work_root, ignore_errors=True)

    def snapshot(self, timeout_s: float = 10) -> dict:
        """The master's whole picture, as a monitor's first request gets it."""
        client = ControlClient(self.control_address, timeout_s=timeout_s)
        try:
            reply, answer = client.request("SNAPSHOT")
        finally:
            client.close()
        assert reply == "SNAPSHOT"
        return answer

    def wait(self, condition: Callable[[], T], timeout_s: float, what: str) -> T:
        """:func:`wait_for`, but fail at once (with its log) if a daemon died."""
        def check():
            for process in [self.master, *self.slaves]:
                if process is not None and not process.expected_exit and \
                        process.proc.poll() is not None:
                    raise AssertionError(f"{process.log_path.name} exited with "
                                         f"{process.proc.returncode}:\n{process.log()[-3000:]}")
            return condition()
        return wait_for(check, timeout_s, what)
