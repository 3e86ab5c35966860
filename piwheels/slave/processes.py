"""Finding and killing a slave's build processes, wherever they went.

A build may leave its session with setsid(), drop its environment and change
directory: nothing it carries then says whose it is.  Two facts still do.
While the slave lives it is a *child subreaper*, so every orphaned descendant
is re-parented to it and stays in its process tree.  And the slave records
that tree (pid and start time) in its work area while a build runs, so that
if the slave itself is killed, the next one can find what is left and kill
it: a pid with the same start time is the same process, never a stranger
that happens to reuse the number.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger("piwheels.slave.processes")

#: prctl(2) options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: Rounds of "kill every process found, look again" before giving up.
KILL_ROUNDS = 50
#: The pause between two kill rounds.
KILL_ROUND_PAUSE_S = 0.05

try:
    _libc: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Linux libc has prctl
    _libc = None


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc says of one process (the fields the slave needs)."""

    pid: int
    state: bytes
    ppid: int
    pgrp: int
    session: int
    tty: int
    start_ticks: int
    uid: int

    @property
    def dead(self) -> bool:
        """A zombie: it has exited, only its parent has not reaped it."""
        return self.state in (b"Z", b"X", b"x")

    @property
    def identity(self) -> tuple[int, int]:
        """(pid, start time): unique on this machine until it reboots."""
        return self.pid, self.start_ticks


def _prctl(option: int, value: int) -> bool:
    if _libc is None:
        return False
    return _libc.prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux 3.4+)."""
    if _prctl(PR_SET_CHILD_SUBREAPER, 1):
        return True
    log.warning("cannot become a child subreaper (%s): a build that escapes its session "
                "may outlive its build", os.strerror(ctypes.get_errno()))
    return False


def die_with_parent() -> None:
    """In a child before exec: be killed when the thread that started it ends.

    The thread is the build's, which lives until the build is over, so this
    fires only when the slave itself dies.
    """
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the slave died before prctl took effect
        os._exit(1)


def process_info(pid: int) -> Optional[ProcessInfo]:
    """/proc/<pid>/stat and the owner of /proc/<pid>, or None if it is gone."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
        fields = line[line.rindex(b")") + 2:].split()
        return ProcessInfo(pid=pid, state=fields[0], ppid=int(fields[1]), pgrp=int(fields[2]),
                           session=int(fields[3]), tty=int(fields[4]),
                           start_ticks=int(fields[19]), uid=uid)
    except (OSError, ValueError, IndexError):
        return None


def all_processes() -> list[ProcessInfo]:
    try:
        pids = [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return []
    return [info for info in map(process_info, pids) if info is not None]


def descendants(roots: Iterable[int], processes: Optional[list[ProcessInfo]] = None
                ) -> list[ProcessInfo]:
    """Every process below the pids *roots* (not the roots themselves)."""
    processes = all_processes() if processes is None else processes
    children: dict[int, list[ProcessInfo]] = {}
    for info in processes:
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessInfo] = []
    todo = list(roots)
    seen = set(todo)
    while todo:
        for child in children.get(todo.pop(), []):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                todo.append(child.pid)
    return found


def kill(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those of *pids* that are this process's children."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def kill_descendants() -> list[int]:
    """SIGKILL every live descendant of this process and reap the orphans; their pids.

    Only for a process whose descendants are all its builds' (the slave): it
    is called when no build runs, or when the build's leader is already reaped.
    """
    me = os.getpid()
    killed: list[int] = []
    for _ in range(KILL_ROUNDS):
        found = descendants([me])
        alive = [info.pid for info in found if not info.dead]
        # orphans re-parented to us: reap them, or they stay zombies
        reap(info.pid for info in found if info.ppid == me and info.dead)
        if not alive:
            return killed
        killed.extend(pid for pid in alive if pid not in killed)
        kill(alive)
        time.sleep(KILL_ROUND_PAUSE_S)
    log.warning("descendants of this slave are still alive: %s", alive)
    return killed


def read_record(path: Path) -> set[tuple[int, int]]:
    """The (pid, start time) pairs recorded in *path* (nothing if it is missing or garbled)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    record = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            record.add((int(parts[0]), int(parts[1])))
    return record


def write_record(path: Path, processes: Iterable[ProcessInfo]) -> None:
    """Replace *path* with the identities of *processes*, atomically."""
    lines = "".join(f"{info.pid} {info.start_ticks}\n" for info in processes if not info.dead)
    temp = path.with_name(path.name + ".new")
    try:
        temp.write_text(lines, encoding="ascii")
        os.replace(temp, path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # the work area is being removed: nothing to keep
            log.warning("cannot record the build's processes in %s: %s", path, exc)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def leftovers(record: set[tuple[int, int]], root: Path) -> list[ProcessInfo]:
    """Live processes of this user that a dead slave left behind in its work area *root*.

    A process is the dead slave's if it is one it recorded (same pid and start
    time), if it works in *root* or names *root* in its environment (its build
    dir is HOME and TMPDIR) and has no controlling terminal (a build has none;
    an operator's shell looking around in there has one), or if it descends
    from such a process.  Nothing of another user is ever included.
    """
    uid = os.getuid()
    me = os.getpid()
    where = str(root)
    mine = [info for info in all_processes()
            if info.uid == uid and info.pid != me and not info.dead]
    found: dict[int, ProcessInfo] = {}
    for info in mine:
        if info.identity in record:
            found[info.pid] = info
            continue
        if info.tty != 0:
            continue
        try:
            cwd = os.readlink(f"/proc/{info.pid}/cwd")
        except OSError:
            cwd = ""
        if _inside(cwd, where):
            found[info.pid] = info
            continue
        try:
            with open(f"/proc/{info.pid}/environ", "rb") as f:
                environ = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if any(_inside(entry.partition("=")[2], where) for entry in environ):
            found[info.pid] = info
    for info in descendants(list(found), mine):
        found.setdefault(info.pid, info)
    return [info for info in found.values() if info.pid != me and me not in _ancestors(info, mine)]


def _ancestors(info: ProcessInfo, processes: list[ProcessInfo]) -> set[int]:
    """The pids above *info* (so a slave never counts itself or its parents)."""
    by_pid = {p.pid: p for p in processes}
    above: set[int] = set()
    pid = info.ppid
    while pid and pid not in above:
        above.add(pid)
        parent = by_pid.get(pid)
        if parent is None:
            break
        pid = parent.ppid
    return above


def kill_leftovers(record: set[tuple[int, int]], root: Path) -> list[int]:
    """Kill what :func:`leftovers` finds until nothing is left; the pids killed."""
    killed: list[int] = []
    for _ in range(KILL_ROUNDS):
        found = [info.pid for info in leftovers(record, root)]
        if not found:
            return killed
        killed.extend(pid for pid in found if pid not in killed)
        kill(found)
        time.sleep(KILL_ROUND_PAUSE_S)
    log.warning("processes left in %s are still alive: %s", root, found)
    return killed


# --- the processes of one running build ------------------------------------------------


def has_exited(pid: int) -> bool:
    """Whether the child *pid* has exited, without reaping it (its pid stays reserved)."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None and result.si_pid == pid


def signal_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_build(leader: int, marker: bytes) -> None:
    """SIGKILL every process of the build until none is left.

    The build's processes are those in its session or process group (its
    leader's pid names both), and any that escaped with setsid() but still
    carry the build's *marker* in their environment.
    """
    remaining: list[int] = []
    for _ in range(KILL_ROUNDS):
        signal_group(leader)
        remaining = build_processes(leader, marker)
        if not remaining:
            return
        kill(remaining)
        time.sleep(KILL_ROUND_PAUSE_S)
    log.warning("processes of a killed build are still alive: %s", remaining)


def build_processes(leader: int, marker: bytes) -> list[int]:
    """Live processes of the build with session or group *leader*, found through /proc."""
    me = os.getpid()
    found = []
    for info in all_processes():
        if info.pid == me or info.dead:
            continue
        if leader in (info.pgrp, info.session, info.pid):
            found.append(info.pid)
            continue
        try:
            with open(f"/proc/{info.pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(info.pid)
    return found
