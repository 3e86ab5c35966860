"""The commands of one build: where they run, with what, until when.

A build runs a few commands: the fetch phase's ``pip download`` on the host
(trusted: it runs no build code), then the build code's commands (``pip
wheel``, the hook probe) in the sandbox, or, where there is none, on the host
as plain processes of the slave's user.  Each gets an environment made from
nothing, its own session, the build's limits, and is watched until it ends,
times out, is cancelled or hits the PID limit; then every process of it is
killed.  (The disk quota is the sandbox's tmpfs, which the wheels leave only
through :mod:`piwheels.slave.hand_out`.)
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..diagnosis import TIMEOUT_REASON
from . import hand_out, processes, sandbox
from .build_log import REASON_TAIL_BYTES, BoundedLog, MiB, clip, note, pump, shown

if TYPE_CHECKING:  # pragma: no cover
    from .builder import Builder

#: How often the build is checked for exit, cancel and timeout.
POLL_INTERVAL_S = 0.1
#: How often the build's processes are recorded in the work area (a slave
#: killed with SIGKILL leaves them to the next one through this record).
PROCESS_RECORD_INTERVAL_S = 0.2
#: How long the log reader may go on draining output after the build is killed.
LOG_DRAIN_TIMEOUT_S = 5.0
#: A build with this many fewer processes than its PID limit is at the limit (bwrap,
#: its init and other tasks of the user count against it too).
PID_LIMIT_SLACK = 8
#: The wrapper that hands a contained build's wheels out, as its copy in the build's input is named.
HAND_OUT_NAME = "hand_out.py"
#: Where the handed-out stream is kept until it is unpacked (in the build dir, beside its wheels).
HANDED_OUT_NAME = "handed-out.tar"
#: The variable that marks every process of a build (it names the build dir).
MARKER_VARIABLE = "PIWHEELS_BUILD"


@dataclass(frozen=True)
class Layout:
    """Where a build's commands find their files: inside the sandbox, or on the host."""

    input: Path
    wheels: Path
    home: Path
    tmp: Path
    work: Path

    @classmethod
    def contained(cls) -> "Layout":
        return cls(sandbox.INSIDE_INPUT, sandbox.INSIDE_WHEELS, sandbox.INSIDE_HOME,
                   sandbox.INSIDE_TMP, sandbox.INSIDE_WORK)

    @classmethod
    def on_host(cls, build_dir: Path) -> "Layout":
        return cls(build_dir / "input", build_dir / "wheels", build_dir / "home",
                   build_dir / "tmp", build_dir / "work")


class BuildRun:
    """The commands of one build: where they run, with what, until when."""

    def __init__(self, builder: Builder, build_dir: Path, text: BoundedLog,
                 deadline_s: float) -> None:
        self.builder = builder
        self.build_dir = build_dir
        self.text = text
        self.deadline_s = deadline_s
        self.input = build_dir / "input"
        self.wheels = build_dir / "wheels"
        self.sandbox = builder._sandbox
        self.layout = Layout.contained() if self.sandbox else Layout.on_host(build_dir)
        self.output = BoundedLog(REASON_TAIL_BYTES)
        self.marker_value = build_dir.name
        #: set from the sdist once it is fetched (see fetch.source_date_epoch)
        self.source_date_epoch: Optional[int] = None

    def stopped(self) -> Optional[str]:
        """Why the build must stop now (cancelled, out of time), or None."""
        if self.builder._cancelled:
            return "cancelled"
        if self.builder.clock() >= self.deadline_s:
            return TIMEOUT_REASON.format(timeout_s=self.builder.limits.timeout_s)
        return None

    def fetch(self, command: list[str]) -> tuple[Optional[int], Optional[str]]:
        """A command of the fetch phase: the slave's own pip, on the host, with the network."""
        env = scrubbed_env(self.build_dir / "home", self.build_dir / "tmp",
                            self.builder.cache_dir, self.marker_value)
        return self._run(command, self.build_dir, env, sandbox.limits_preexec(0, 0))

    def contained(self, command: list[str], hand_out: bool = False
                  ) -> tuple[Optional[int], Optional[str]]:
        """A command that runs build code: in the sandbox if there is one.

        The sandbox has no writable host directory; with *hand_out* the wheels
        the command leaves in its wheel directory are handed out to the build's
        (see :mod:`piwheels.slave.hand_out`), at most the disk quota's worth.
        """
        layout = self.layout
        env = scrubbed_env(layout.home, layout.tmp, layout.home / ".cache" / "pip",
                            self.marker_value)
        if self.source_date_epoch is not None:
            # backends that honour it date the wheel's files by the sdist, not
            # by the clock: the same sdist rebuilt gives the same bytes
            env["SOURCE_DATE_EPOCH"] = str(self.source_date_epoch)
        limits = self.builder.limits
        nproc = 0
        if limits.pid_limit > 0 and os.geteuid() != 0:
            nproc = sandbox.user_tasks() + limits.pid_limit
        preexec = sandbox.limits_preexec(limits.memory_bytes, nproc)
        if self.sandbox is None:
            for directory in (layout.home, layout.tmp, layout.work):
                directory.mkdir(exist_ok=True)
            return self._run(command, layout.work, env, preexec)
        if not hand_out:
            return self._run(self.sandbox.command(command, input_dir=self.input),
                             self.build_dir, env, preexec)
        return self._handing_out(command, env, preexec)

    def _handing_out(self, command: list[str], env: dict[str, str],
                     preexec: Callable[[], None]) -> tuple[Optional[int], Optional[str]]:
        """Run *command* in the sandbox under the hand-out wrapper, then unpack what it handed out."""
        assert self.sandbox is not None
        limit_bytes = self.builder.limits.disk_bytes
        stream = self.build_dir / HANDED_OUT_NAME
        read_fd, write_fd = os.pipe()
        received: list[bool] = []
        receiver = threading.Thread(
            target=lambda: received.append(hand_out.receive(read_fd, stream, limit_bytes)),
            name="hand-out", daemon=True)
        receiver.start()
        wrapped = [self.builder.python, "-I", str(self.layout.input / HAND_OUT_NAME),
                   str(write_fd), str(self.layout.wheels), "--", *command]
        try:
            returncode, reason = self._run(
                self.sandbox.command(wrapped, input_dir=self.input), self.build_dir, env,
                preexec, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the sandbox is gone: the receiver sees the end
            receiver.join()
        try:
            if reason is None and not all(received):
                reason = (f"disk quota of the build directory exceeded (the limit is "
                          f"{limit_bytes // MiB} MiB)")
            if reason is None and stream.stat().st_size > 0:
                _, reason = hand_out.unpack(stream, self.wheels)
        finally:
            stream.unlink(missing_ok=True)
        return returncode, reason

    def _too_many_processes(self, leader: int) -> bool:
        """Whether the build holds (about) all the processes it may have: a fork bomb.

        RLIMIT_NPROC makes its forks fail; this ends a build that keeps
        trying rather than let it spin until the timeout.
        """
        limit = self.builder.limits.pid_limit
        if limit <= 0:
            return False
        found = [info for info in processes.descendants([leader]) if not info.dead]
        return len(found) >= max(1, limit - PID_LIMIT_SLACK)

    def _run(self, command: list[str], cwd: Path, env: dict[str, str],
             preexec: Callable[[], None], pass_fds: tuple[int, ...] = ()
             ) -> tuple[Optional[int], Optional[str]]:
        """Run *command* to the end or until timeout, cancel or the PID limit: (exit status, reason)."""
        builder = self.builder
        self.text.write(f"$ {shown(command, builder.index_url)}\n".encode("utf-8", "replace"))
        self.output = BoundedLog(REASON_TAIL_BYTES)
        # Anything still carrying this marker is the build's, even if it left
        # the session: that is how escaped processes are found.
        marker = f"{MARKER_VARIABLE}={self.marker_value}".encode()
        with builder._lock:
            if builder._cancelled:
                return None, "cancelled"
            try:
                proc = subprocess.Popen(
                    command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=preexec, pass_fds=pass_fds,
                )
            except OSError as exc:
                return None, clip(f"cannot start {command[0]}: {exc}")
            builder._proc = proc
        assert proc.stdout is not None
        stop_reading = threading.Event()
        reader = threading.Thread(
            target=pump, args=(proc.stdout.fileno(), (self.text, self.output), stop_reading),
            name="build-log", daemon=True)
        reader.start()
        clock = builder.clock
        started_s = next_record_s = clock()
        reason: Optional[str] = None
        try:
            while not processes.has_exited(proc.pid):
                now = clock()
                if now >= next_record_s:
                    next_record_s = now + PROCESS_RECORD_INTERVAL_S
                    if builder.work_area is not None:
                        builder.work_area.record()
                    if self._too_many_processes(proc.pid):
                        reason = (f"the build exceeded the PID limit "
                                  f"({builder.limits.pid_limit} processes)")
                        break
                if builder._cancelled:
                    reason = "cancelled"
                    break
                if now >= self.deadline_s:
                    reason = TIMEOUT_REASON.format(timeout_s=builder.limits.timeout_s)
                    break
                builder._wake.wait(POLL_INTERVAL_S)
        finally:
            with builder._lock:
                builder._proc = None
            processes.kill_build(proc.pid, marker)
            returncode = proc.wait()
            if builder.work_area is not None:
                # the leader is reaped: what is left are orphans re-parented to the slave
                builder.work_area.kill_orphans()
            reader.join(LOG_DRAIN_TIMEOUT_S)
            stop_reading.set()
            reader.join()
            proc.stdout.close()
        if reason is None and builder._cancelled:
            reason = "cancelled"
        note(self.text, f"exit status {returncode} after {clock() - started_s:.1f} s")
        return returncode, reason


def scrubbed_env(home: Path, tmp: Path, pip_cache: Path, marker: str) -> dict[str, str]:
    """The whole environment of a build's commands: nothing of the slave's but PATH."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        # /dev/null means "read no pip configuration file at all" to pip.
        "PIP_CONFIG_FILE": os.devnull,
        # The pip that installs build dependencies is a child of the first and
        # does not inherit its --cache-dir or --progress-bar, only these.
        "PIP_CACHE_DIR": str(pip_cache),
        "PIP_PROGRESS_BAR": "off",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_NO_INPUT": "1",
        # --disable-pip-version-check does not reach the pip that installs
        # build dependencies, and each check asks the index for pip's version.
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        MARKER_VARIABLE: marker,
    }
