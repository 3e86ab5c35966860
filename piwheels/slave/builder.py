"""Running one pip build of one release, inside limits, and reading what it made.

A build runs arbitrary code from the upstream index, so it gets as little as
possible: a fresh temporary directory, stdin from /dev/null, an environment
built from nothing (no secrets of the slave, no host pip configuration), its
own session and process group, an address-space limit, and a wall-clock
timeout after which every process it started is killed.  Given the slave's
:class:`~piwheels.slave.work_area.WorkArea`, it also records the build's
processes while it runs and kills every descendant of the slave when it ends
(the slave is their subreaper: see :mod:`piwheels.slave.processes`).  Only the target is
built from source; build dependencies come as wheels through pip's HTTP cache,
which is shared between builds (pip's cache of wheels it built is not: a rebuild
must really build).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, InvalidName, InvalidVersion, WheelError
from ..names import canonical_name, normal_version
from ..wheel_facts import WheelFacts, check_identity, inspect_wheel
from . import processes
from .work_area import WorkArea, remove_tree

log = logging.getLogger("piwheels.slave.builder")

Clock = Callable[[], float]

#: How often the build is checked for exit, cancel and timeout.
POLL_INTERVAL_S = 0.1
#: How often the build's processes are recorded in the work area (a slave
#: killed with SIGKILL leaves them to the next one through this record).
PROCESS_RECORD_INTERVAL_S = 0.2
#: How long the log reader may go on draining output after the build is killed.
LOG_DRAIN_TIMEOUT_S = 5.0
#: How long asking the build interpreter about itself may take.
PROBE_TIMEOUT_S = 60.0
#: Rounds of "kill every process of the build, look again" before giving up.
KILL_ROUNDS = 50
#: Bytes read from the build's output at a time.
READ_BYTES = 64 * 1024
#: The longest failure reason sent to the master (the protocol allows 500).
MAX_REASON_CHARS = 400
#: pip's cache directories that builds share: only downloads, never built wheels.
SHARED_PIP_CACHES = ("http", "http-v2")
#: Text in a failed build's log that means it ran out of memory.
MEMORY_SIGNS = ("MemoryError", "out of memory", "Cannot allocate memory")

# Runs in the build interpreter: the facts HELLO reports.  pip is certain to be
# there (it runs the builds); its vendored packaging is the fallback.
_PROBE = """\
import json, platform
try:
    from pip._vendor.packaging import tags
except ImportError:
    from packaging import tags
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(dist):
    try:
        return metadata.version(dist)
    except Exception:
        return "none"
every = list(tags.sys_tags())
first = every[0]
platforms = [t.platform for t in every if (t.interpreter, t.abi) == (first.interpreter, first.abi)]
# What a local build is tagged with: not a manylinux or musllinux tag (the
# order of platforms differs between packaging releases).
plain = [p for p in platforms if not p.startswith(("manylinux", "musllinux"))]
print(json.dumps({
    "python_tag": first.interpreter,
    "abi_tag": first.abi,
    "platform_tag": (plain or platforms)[-1],
    "python_version": platform.python_version(),
    "pip_version": version("pip"),
    "setuptools_version": version("setuptools"),
}))
"""


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use."""

    timeout_s: float
    memory_bytes: int
    max_log_bytes: int


@dataclass
class BuildResult:
    """The outcome of one build; its wheels stay on disk until :meth:`close`."""

    success: bool
    duration_s: float
    log: str
    reason: Optional[str]
    wheels: list[tuple[Path, WheelFacts]] = field(default_factory=list)
    build_dir: Optional[Path] = None

    def close(self) -> None:
        """Remove the build's directory with its wheels (again: nothing happens)."""
        if self.build_dir is not None:
            remove_tree(self.build_dir)
            self.build_dir = None

    def __enter__(self) -> "BuildResult":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BoundedLog:
    """The first and last bytes of a stream, with a marker saying how much was cut."""

    def __init__(self, max_bytes: int) -> None:
        self.head_limit = max(0, max_bytes) // 2
        self.tail_limit = max(0, max_bytes) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.cut_bytes = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            room = self.head_limit - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit + READ_BYTES:
                self._trim()

    def _trim(self) -> None:
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            del self.tail[:excess]
            self.cut_bytes += excess

    def text(self) -> str:
        with self._lock:
            self._trim()
            marker = f"\n[... {self.cut_bytes} bytes cut ...]\n" if self.cut_bytes else ""
            return (
                self.head.decode("utf-8", "replace") + marker + self.tail.decode("utf-8", "replace")
            )


class Builder:
    """Builds one release at a time with ``pip wheel`` (see the module docstring).

    ``index_url`` may be changed between builds (the master names it in ACK).
    """

    def __init__(self, *, python: str, index_url: str, work_dir: Path, cache_dir: Path,
                 limits: BuildLimits, clock: Clock = time.monotonic,
                 work_area: Optional[WorkArea] = None) -> None:
        self.python = python
        self.work_area = work_area
        self.index_url = index_url
        self.work_dir = Path(work_dir)
        self.cache_dir = Path(cache_dir)
        self.limits = limits
        self.clock = clock
        self._environment: Optional[dict[str, str]] = None
        self._environment_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below, shared with cancel()
        self._running = False
        self._cancelled = False
        self._proc: Optional[subprocess.Popen] = None
        self._wake = threading.Event()

    # --- the build interpreter ---------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """Facts about the build interpreter and host, for HELLO and the log header."""
        with self._environment_lock:
            if self._environment is None:
                self._environment = self._probe()
            return dict(self._environment)

    def _probe(self) -> dict[str, str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="piw-probe-", dir=self.work_dir) as tmp:
            try:
                probe = subprocess.run(
                    [self.python, "-I", "-c", _PROBE], stdin=subprocess.DEVNULL,
                    capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
                    cwd=tmp, env=_scrubbed_env(Path(tmp), Path(tmp)),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(f"cannot run the build interpreter {self.python}: {exc}") from None
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"the build interpreter {self.python} failed to describe itself: {last}")
        facts = json.loads(probe.stdout)
        facts["os"] = _os_name()
        return {key: str(value) for key, value in facts.items()}

    # --- building ---------------------------------------------------------------------

    def build(self, package: str, version: str) -> BuildResult:
        """Build *package* *version*; blocks until it is built, failed, timed out or cancelled."""
        with self._lock:
            if self._running:
                raise RuntimeError("this builder is already running a build")
            self._running = True
            self._cancelled = False
            self._proc = None
            self._wake.clear()
        start_s = self.clock()
        build_dir: Optional[Path] = None
        result: Optional[BuildResult] = None
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            build_dir = Path(tempfile.mkdtemp(prefix="piw-build-", dir=self.work_dir))
            result = self._build(package, version, build_dir, start_s)
            return result
        finally:
            if build_dir is not None and result is not None and result.success:
                for scratch in ("home", "tmp", "pip-cache"):
                    remove_tree(build_dir / scratch)
            elif build_dir is not None:
                remove_tree(build_dir)
            with self._lock:
                self._running = False
                self._proc = None

    def cancel(self) -> None:
        """Kill the running build's processes now; :meth:`build` then reports "cancelled".

        Safe from any thread; with no build running it does nothing.
        """
        with self._lock:
            if not self._running:
                return
            self._cancelled = True
            if self._proc is not None:
                # The leader is not reaped while _proc is set, so its pid (the
                # group's id) cannot have been reused.
                _signal_group(self._proc.pid)
        self._wake.set()

    def _build(self, package: str, version: str, build_dir: Path, start_s: float) -> BuildResult:
        text = BoundedLog(self.limits.max_log_bytes)

        def finish(success: bool, reason: Optional[str],
                   wheels: Optional[list[tuple[Path, WheelFacts]]] = None) -> BuildResult:
            if success:
                names = ", ".join(facts.filename for _, facts in wheels or [])
                text.write(f"\n--- piwheels: built {names}\n".encode())
            else:
                text.write(f"\n--- piwheels: build failed: {reason}\n".encode())
            return BuildResult(
                success=success, duration_s=max(0.0, self.clock() - start_s), log=text.text(),
                reason=reason, wheels=wheels or [], build_dir=build_dir if success else None,
            )

        try:
            canonical_name(package)
            normal_version(version)
        except (InvalidName, InvalidVersion) as exc:
            return finish(False, str(exc))
        wheel_dir = build_dir / "wheels"
        pip_cache = build_dir / "pip-cache"
        for directory in (wheel_dir, pip_cache, build_dir / "home", build_dir / "tmp"):
            directory.mkdir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for name in SHARED_PIP_CACHES:
            (self.cache_dir / name).mkdir(exist_ok=True)
            (pip_cache / name).symlink_to(self.cache_dir / name, target_is_directory=True)
        command = [
            self.python, "-m", "pip", "wheel", f"{package}=={version}",
            "--no-deps", "--no-binary", package, "--wheel-dir", str(wheel_dir),
            "--index-url", self.index_url, "--cache-dir", str(pip_cache),
            "--progress-bar", "off", "--disable-pip-version-check", "--no-input", "--verbose",
        ]
        text.write(self._header(package, version, command).encode("utf-8", "replace"))
        returncode, reason = self._run(command, build_dir, pip_cache, text)
        if reason is not None:
            return finish(False, reason)
        if returncode != 0:
            return finish(False, self._failure_reason(returncode, text.text()))
        wheels = []
        for path in sorted(wheel_dir.glob("*.whl")):
            try:
                facts = inspect_wheel(path)
                check_identity(facts, package=package, version=version)
            except WheelError as exc:
                return finish(False, _clip(f"pip made an unacceptable wheel: {exc}"))
            wheels.append((path, facts))
        if not wheels:
            return finish(False, "pip reported success but made no wheel")
        return finish(True, None, wheels)

    def _run(self, command: list[str], build_dir: Path, pip_cache: Path,
             text: BoundedLog) -> tuple[Optional[int], Optional[str]]:
        """Run pip to the end or until timeout or cancel: (exit status, reason it was stopped)."""
        env = _scrubbed_env(build_dir, pip_cache)
        # Anything still carrying this build's TMPDIR is the build's, even if it
        # left the session: that is how escaped processes are found.
        marker = f"TMPDIR={env['TMPDIR']}".encode()
        memory = self.limits.memory_bytes
        with self._lock:
            if self._cancelled:
                return None, "cancelled"
            try:
                proc = subprocess.Popen(
                    command, cwd=build_dir, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_build_preexec(memory),
                )
            except OSError as exc:
                return None, _clip(f"cannot start {self.python}: {exc}")
            self._proc = proc
        assert proc.stdout is not None
        stop_reading = threading.Event()
        reader = threading.Thread(
            target=_pump, args=(proc.stdout.fileno(), text, stop_reading),
            name="build-log", daemon=True)
        reader.start()
        deadline_s = self.clock() + self.limits.timeout_s
        next_record_s = self.clock()
        reason: Optional[str] = None
        try:
            while not _has_exited(proc.pid):
                if self.work_area is not None and self.clock() >= next_record_s:
                    self.work_area.record()
                    next_record_s = self.clock() + PROCESS_RECORD_INTERVAL_S
                if self._cancelled:
                    reason = "cancelled"
                    break
                if self.clock() >= deadline_s:
                    reason = f"timed out after {self.limits.timeout_s:g} s"
                    break
                self._wake.wait(POLL_INTERVAL_S)
        finally:
            with self._lock:
                self._proc = None
            _kill_build(proc.pid, marker)
            returncode = proc.wait()
            if self.work_area is not None:
                # the leader is reaped: what is left are orphans re-parented to the slave
                self.work_area.kill_orphans()
            reader.join(LOG_DRAIN_TIMEOUT_S)
            stop_reading.set()
            reader.join()
            proc.stdout.close()
        if reason is None and self._cancelled:
            reason = "cancelled"
        return returncode, reason

    def _header(self, package: str, version: str, command: list[str]) -> str:
        env = self.environment()
        memory = self.limits.memory_bytes
        index_url = _redact_url(self.index_url)
        shown = [index_url if part == self.index_url else part for part in command]
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"piwheels build of {package} {version}, started {started}\n"
            f"python: {self.python} ({env['python_version']}, "
            f"{env['python_tag']}-{env['abi_tag']}-{env['platform_tag']})\n"
            f"pip: {env['pip_version']}; setuptools: {env['setuptools_version']}\n"
            f"os: {env['os']}\n"
            f"index: {index_url}\n"
            f"limits: {self.limits.timeout_s:g} s, "
            f"memory {f'{memory // (1024 * 1024)} MiB' if memory > 0 else 'unlimited'}, "
            f"log {self.limits.max_log_bytes} bytes\n"
            f"command: {shlex.join(shown)}\n"
            f"---\n"
        )

    def _failure_reason(self, returncode: int, output: str) -> str:
        """One line for the master: pip's exit status and its most telling error."""
        reason = f"pip wheel failed with exit status {returncode}"
        tail = output[-256 * 1024:]
        if self.limits.memory_bytes > 0 and any(sign in tail for sign in MEMORY_SIGNS):
            limit_mib = self.limits.memory_bytes // (1024 * 1024)
            return f"{reason}: out of memory (the limit is {limit_mib} MiB)"
        lines = [line.strip() for line in tail.splitlines()]
        # pip's own words when the sdist's metadata disagrees with the job
        # (the start of that line is a long URL)
        telling = [
            "the sdist " + line[line.index("has inconsistent"):]
            for line in lines if "has inconsistent" in line
        ]
        telling += [line for line in lines if line.startswith("ERROR:")]
        if telling:
            reason = f"{reason}: {telling[0]}"
        return _clip(reason)


# --- helpers ----------------------------------------------------------------------------


def _scrubbed_env(build_dir: Path, pip_cache: Path) -> dict[str, str]:
    """The whole environment of a build: nothing of the slave's but PATH."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(build_dir / "home"),
        "TMPDIR": str(build_dir / "tmp"),
        # /dev/null means "read no pip configuration file at all" to pip.
        "PIP_CONFIG_FILE": os.devnull,
        # The pip that installs build dependencies is a child of the first and
        # does not inherit its --cache-dir or --progress-bar, only these.
        "PIP_CACHE_DIR": str(pip_cache),
        "PIP_PROGRESS_BAR": "off",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_NO_INPUT": "1",
    }


def _build_preexec(memory_bytes: int) -> Callable[[], None]:
    """A preexec_fn that only calls setrlimit and prctl (safe enough between fork and exec)."""
    limits = (memory_bytes, memory_bytes)

    def apply() -> None:
        processes.die_with_parent()
        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, limits)

    return apply


def _pump(fd: int, text: BoundedLog, stop: threading.Event) -> None:
    """Copy the build's output into *text* as it comes, so the pipe never fills."""
    while True:
        ready, _, _ = select.select([fd], [], [], POLL_INTERVAL_S)
        if ready:
            try:
                data = os.read(fd, READ_BYTES)
            except OSError:
                return
            if not data:
                return
            text.write(data)
        elif stop.is_set():
            return


def _has_exited(pid: int) -> bool:
    """Whether the child *pid* has exited, without reaping it (its pid stays reserved)."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None and result.si_pid == pid


def _signal_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_build(leader: int, marker: bytes) -> None:
    """SIGKILL every process of the build until none is left.

    The build's processes are those in its session or process group (its
    leader's pid names both), and any that escaped with setsid() but still
    carry the build's *marker* in their environment.
    """
    for _ in range(KILL_ROUNDS):
        _signal_group(leader)
        remaining = _build_processes(leader, marker)
        if not remaining:
            return
        for pid in remaining:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    log.warning("processes of a killed build are still alive: %s", remaining)


def _build_processes(leader: int, marker: bytes) -> list[int]:
    """Live processes of the build with session or group *leader*, found through /proc."""
    me = os.getpid()
    found = []
    try:
        entries = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        pid = int(name)
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat_line = f.read()
            fields = stat_line[stat_line.rindex(b")") + 2:].split()
            state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        except (OSError, ValueError, IndexError):
            continue
        if state in (b"Z", b"X", b"x"):
            continue  # already dead, only not yet reaped by its parent
        if pgrp == leader or session == leader or pid == leader:
            found.append(pid)
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(pid)
    return found


def _redact_url(url: str) -> str:
    """*url* without a password, for the log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _os_name() -> str:
    """The host's PRETTY_NAME from os-release, or what the platform module says."""
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(candidate, encoding="utf-8") as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep and key == "PRETTY_NAME":
                        words = shlex.split(value)
                        if words:
                            return words[0]
        except (OSError, ValueError):
            continue
    return platform.platform()


def _clip(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."
