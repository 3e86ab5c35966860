"""The part of the work dir that one running slave owns, and the removal of dead ones'.

Each slave run claims a directory ``piw-slave-*`` of its own under ``--dir``
and holds an exclusive lock (flock) on the ``lock`` file inside it for as long
as it lives; its builds run in there.  The kernel drops the lock when the
process dies, however it dies, so at start a slave can tell a dead run's area
(lockable) from a live one's (locked): it kills what the dead run left running
and removes its area, and never touches a live slave's, nor anything under
``--dir`` that does not follow this naming scheme, nor another user's files.

An area is claimed under a name outside the scheme and renamed into it only
once its lock is held, so no sweeper ever sees an unlocked live area.  A dead
area is renamed out of the scheme (``.piw-removing-*``) before it is removed,
so a removal cut short is finished by the next slave.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import PiwheelsError
from . import processes

log = logging.getLogger("piwheels.slave.work_area")

#: The names of the directories slaves make under --dir.
AREA_PREFIX = "piw-slave-"
CLAIMING_PREFIX = ".piw-claiming-"
REMOVING_PREFIX = ".piw-removing-"
#: The file each area's owner holds locked.
LOCK_NAME = "lock"
#: The first line of that file: what makes a directory a slave's area.
LOCK_MARKER = "piwheels slave work area"
#: The file where the owner records its builds' processes.
RECORD_NAME = "processes"


@dataclass
class SweepReport:
    """What a slave found of dead runs at start."""

    areas_removed: list[Path] = field(default_factory=list)
    processes_killed: list[int] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        return (f"removed {len(self.areas_removed)} work area(s) of earlier runs "
                f"({self.bytes_freed} bytes) and killed {len(self.processes_killed)} "
                f"process(es) they left running")


def _owned_dir(path: Path) -> bool:
    """A real directory (not a symlink) that belongs to this user."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def tree_size(path: Path) -> int:
    """The apparent size of the files under *path* (a sparse file counts whole)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def _try_lock(path: Path) -> Optional[int]:
    """An fd holding *path* exclusively locked, or None if a live slave holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class WorkArea:
    """A slave run's own directory under the work dir (see the module docstring)."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self.record_path = path / RECORD_NAME
        self._lock_fd: Optional[int] = lock_fd
        self._recorded: frozenset[tuple[int, int]] = frozenset()

    @classmethod
    def claim(cls, work_dir: Path) -> "WorkArea":
        """Make and lock a new area under *work_dir*."""
        try:
            claiming = Path(tempfile.mkdtemp(prefix=CLAIMING_PREFIX, dir=work_dir))
            lock = claiming / LOCK_NAME
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{LOCK_MARKER}\npid {os.getpid()}\n".encode())
            path = work_dir / (AREA_PREFIX + claiming.name[len(CLAIMING_PREFIX):])
            os.rename(claiming, path)
        except OSError as exc:
            raise PiwheelsError(f"cannot make a work area under {work_dir}: {exc}") from None
        return cls(path, fd)

    def record(self) -> None:
        """Write down this slave's descendants, for the next slave if this one is killed.

        The file is rewritten only when they change (a slave's disk may be an SD card).
        """
        found = [info for info in processes.descendants([os.getpid()]) if not info.dead]
        identities = frozenset(info.identity for info in found)
        if identities != self._recorded:
            processes.write_record(self.record_path, found)
            self._recorded = identities

    def kill_orphans(self) -> list[int]:
        """Kill every process left below this slave (called when no build runs)."""
        killed = processes.kill_descendants()
        if killed:
            log.info("killed %d process(es) a build left behind: %s", len(killed), killed)
        if self._recorded:
            processes.write_record(self.record_path, [])
            self._recorded = frozenset()
        return killed

    def close(self) -> None:
        """Kill what is left of this run's builds, remove the area, drop the lock."""
        if self._lock_fd is None:
            return
        processes.kill_descendants()
        remove_tree(self.path)
        os.close(self._lock_fd)
        self._lock_fd = None


def sweep(work_dir: Path) -> SweepReport:
    """Kill the leftovers of dead slaves' areas under *work_dir* and remove the areas."""
    report = SweepReport()
    try:
        names = sorted(os.listdir(work_dir))
    except OSError as exc:
        log.warning("cannot look for leftovers in %s: %s", work_dir, exc)
        return report
    for name in names:
        path = work_dir / name
        if name.startswith(AREA_PREFIX) and _owned_dir(path):
            _sweep_area(path, report)
        elif name.startswith(REMOVING_PREFIX) and _owned_dir(path):
            # condemned by a slave that died while removing it
            report.processes_killed += processes.kill_leftovers(set(), path)
            report.bytes_freed += tree_size(path)
            remove_tree(path)
            report.areas_removed.append(path)
    return report


def _sweep_area(path: Path, report: SweepReport) -> None:
    lock = path / LOCK_NAME
    fd = _try_lock(lock)
    if fd is None:
        return  # a live slave's (or not an area at all: no lock file)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            if not f.read(len(LOCK_MARKER)).decode("utf-8", "replace") == LOCK_MARKER:
                return
        killed = processes.kill_leftovers(processes.read_record(path / RECORD_NAME), path)
        condemned = path.with_name(REMOVING_PREFIX + path.name[len(AREA_PREFIX):])
        try:
            os.rename(path, condemned)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot remove the leftover work area %s: %s", path, exc)
            return
        report.processes_killed += killed
        report.bytes_freed += tree_size(condemned)
        remove_tree(condemned)
        report.areas_removed.append(path)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove *path* entirely, even where the build took away write permission."""

    def make_writable(func: Callable, target: str, *args: object) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)
        except OSError:
            pass

    if not os.path.lexists(path):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable)
    else:
        shutil.rmtree(path, onerror=make_writable)
