"""A throw-away bubblewrap sandbox for the code of a build, as sbuild and mock do it.

The build runs in new user, network (loopback only), mount, PID, IPC, UTS and
cgroup namespaces (``bwrap --unshare-all``).  Its filesystem is made from
nothing: the host's system trees (/usr, /etc, /opt and the build interpreter's
own directories) read-only, a fresh /proc and /dev, and one size-limited tmpfs
at /tmp that holds everything the build may write (its home, its temporary
files, its working directory): that tmpfs is the build dir's disk quota, and
it is gone when the sandbox ends.  The fetched sdist and build dependencies
are bound read-only at /tmp/input; no host directory is writable (the wheels
leave through a pipe, see :mod:`piwheels.slave.hand_out`, so the quota holds
for them too).  Nothing else of the host is there:
not the slave's home, work dir, cache, configuration or keys, not /run (where
sockets such as PostgreSQL's live), not /tmp.  The sandbox's pid 1 is
bubblewrap's, and when it dies the kernel kills every process in the
namespace, so nothing a build starts survives it.

The process limit is RLIMIT_NPROC, which Linux counts per real user across
the whole machine, so it is set to the user's current number of tasks plus
the build's allowance (an unprivileged slave cannot use the pids cgroup
controller without a delegated cgroup).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import processes

#: Where the build finds things inside the sandbox.
INSIDE_TMP = Path("/tmp")
INSIDE_INPUT = INSIDE_TMP / "input"
INSIDE_WHEELS = INSIDE_TMP / "wheels"
INSIDE_HOME = INSIDE_TMP / "home"
INSIDE_WORK = INSIDE_TMP / "build"
#: The size of the sandbox's private /dev/shm (POSIX semaphores, shared memory).
SHM_BYTES = 64 * 1024 * 1024
#: Host trees the build sees, read-only (the system's programs, libraries, headers).
SYSTEM_TREES = ("/usr", "/etc", "/opt")
#: Top-level entries that are symlinks into /usr on merged-/usr systems, or real trees.
SYSTEM_ENTRIES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Host paths never shown to a build even where a system tree holds them.
ALWAYS_HIDDEN = ("/etc/piwheels.conf", "/etc/piwheels")
#: How long the check that namespaces work may take.
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Containment:
    """Whether builds can be contained here, in the words HELLO and the log use."""

    bwrap: Optional[str]
    description: str

    @property
    def available(self) -> bool:
        return self.bwrap is not None


def detect(bwrap: str) -> Containment:
    """Find *bwrap* and check that it can make the namespaces here ("none: why" if not)."""
    path = shutil.which(bwrap)
    if path is None:
        return Containment(None, f"none: {bwrap} not found (install the bubblewrap package)")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=CHECK_TIMEOUT_S)
        trial = subprocess.run(
            [path, "--unshare-all", "--die-with-parent", "--new-session",
             *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--", "true"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=CHECK_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Containment(None, f"none: cannot run {path}: {exc}")
    if trial.returncode != 0:
        why = (trial.stderr.strip().splitlines() or [f"exit status {trial.returncode}"])[-1]
        return Containment(None, f"none: {path} cannot make namespaces here ({why})")
    words = version.stdout.split()
    name = f"bwrap {words[-1]}" if words else "bwrap"
    return Containment(path, name)


def _system_binds() -> list[str]:
    """The system trees, read-only, with /bin and friends as they are on the host."""
    args: list[str] = []
    for tree in SYSTEM_TREES:
        args += ["--ro-bind-try", tree, tree]
    for entry in SYSTEM_ENTRIES:
        if os.path.islink(entry):
            args += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            args += ["--ro-bind", entry, entry]
    return args


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Sandbox:
    """The bubblewrap command line for one kind of build (see the module docstring).

    *readonly* are the host directories the build interpreter needs (its
    prefixes); *hidden* are host paths the build must never see even if they
    lie inside a tree it sees (the slave's configuration, keys, work dir).
    """

    bwrap: str
    readonly: tuple[str, ...]
    hidden: tuple[str, ...]
    disk_bytes: int

    def command(self, argv: list[str], *, input_dir: Path) -> list[str]:
        """*argv* wrapped in bwrap, with *input_dir* read-only inside and no host directory writable.

        bwrap hands its own environment (the builder's scrubbed one) to *argv*.
        """
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--hostname", "piwheels-build", *_system_binds()]
        args += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
            # bwrap's /dev is a tmpfs of half the memory that the build could fill
            "--remount-ro", "/dev",
            "--size", str(self.disk_bytes), "--tmpfs", str(INSIDE_TMP),
        ]
        shown = [tree for tree in SYSTEM_TREES if os.path.isdir(tree)]
        for path in _outermost(self.readonly):
            if not any(_inside(path, tree) for tree in shown):
                args += ["--ro-bind", path, path]
                shown.append(path)
        for path in sorted(set(ALWAYS_HIDDEN) | set(self.hidden)):
            if not any(_inside(path, tree) for tree in shown) or not os.path.lexists(path):
                continue  # not visible in the first place
            if os.path.isdir(path) and not os.path.islink(path):
                args += ["--tmpfs", path]
            else:
                args += ["--ro-bind", os.devnull, path]
        args += [
            "--ro-bind", str(input_dir), str(INSIDE_INPUT),
            "--dir", str(INSIDE_HOME), "--dir", str(INSIDE_WORK),
            "--dir", "/var", "--symlink", "../tmp", "/var/tmp",
            "--chdir", str(INSIDE_WORK),
            "--remount-ro", "/",
            "--", *argv,
        ]
        return args


def _outermost(paths: Iterable[str]) -> list[str]:
    """*paths* without those inside another of them."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}, key=len):
        if not any(_inside(path, other) for other in kept):
            kept.append(path)
    return kept


def user_tasks(uid: Optional[int] = None) -> int:
    """The number of tasks (threads) this user runs now: what RLIMIT_NPROC counts."""
    uid = os.getuid() if uid is None else uid
    count = 0
    for info in processes.all_processes():
        if info.uid != uid:
            continue
        try:
            count += len(os.listdir(f"/proc/{info.pid}/task"))
        except OSError:
            pass
    return count


def limits_preexec(memory_bytes: int, nproc: int) -> Callable[[], None]:
    """A preexec_fn for the build's first process: die with the slave, its limits.

    *nproc* is the RLIMIT_NPROC to set (0: leave it).  Only setrlimit and
    prctl run between fork and exec.
    """
    memory = (memory_bytes, memory_bytes)
    tasks = (nproc, nproc)

    def apply() -> None:
        processes.die_with_parent()
        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, memory)
        if nproc > 0:
            resource.setrlimit(resource.RLIMIT_NPROC, tasks)

    return apply
