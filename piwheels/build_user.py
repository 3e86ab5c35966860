"""Running quick start's slaves as the unprivileged build user, even when what
they need lies under a home directory other users cannot enter.

Slaves refuse root, so quick start started as root runs them as a build user.
A root-installed pyenv (and often the checkout with its ``.venv``) lives under
``/root``, mode 700 on a fresh system, where that user cannot go.  Rather than
open the home, each slave then runs in a private mount namespace in which every
closed directory above what it needs is covered by an empty tmpfs of mode 755
and only the needed trees are bound back into place.  Nothing on the host
changes: the mounts exist only in the slave's namespace and go with it.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .errors import ConfigError

#: Who stands in for a build user not created yet when checking what it can reach:
#: like a new system user, it owns nothing and is in no group that owns anything.
STAND_IN_USER = "nobody"
#: The util-linux programs a private mount namespace is made with.
NAMESPACE_TOOLS = ("unshare", "mount", "umount", "setpriv")
#: What the interpreter reports about the trees it runs from.
TREES_SCRIPT = ("import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.exec_prefix, "
                "sys.base_prefix, sys.base_exec_prefix]))")


@dataclass(frozen=True)
class Identity:
    """Whom a process runs as: its user, its group and its other groups."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int] = field(default_factory=frozenset)
    home: str = "/"

    @classmethod
    def of_user(cls, name: str) -> Optional[Identity]:
        """The build user *name* (with no other groups, as slaves run), or None if missing."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, entry.pw_uid, entry.pw_gid, home=entry.pw_dir)

    @classmethod
    def stand_in(cls, name: str) -> Identity:
        """Someone with the rights a new system user *name* will have: none of its own."""
        try:
            entry = pwd.getpwnam(STAND_IN_USER)
            uid, gid = entry.pw_uid, entry.pw_gid
        except KeyError:
            uid = gid = 65534
        return cls(name, uid, gid)

    @classmethod
    def current(cls) -> Identity:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getegid(), frozenset(os.getgroups()))

    def may(self, path: Path, mode_bits: tuple[int, int, int]) -> bool:
        """Whether the (user, group, other) permission bits of *path* let this identity in."""
        if self.uid == 0:
            return True
        try:
            info = path.stat()
        except OSError:
            return False
        user, group, other = mode_bits
        if info.st_uid == self.uid:
            return bool(info.st_mode & user)
        if info.st_gid == self.gid or info.st_gid in self.groups:
            return bool(info.st_mode & group)
        return bool(info.st_mode & other)

    def can_enter(self, directory: Path) -> bool:
        return self.may(directory, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))

    def can_read(self, path: Path) -> bool:
        readable = self.may(path, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))
        return readable and (not path.is_dir() or self.can_enter(path))


def closed_above(path: Path, who: Identity) -> Optional[Path]:
    """The topmost directory above *path* (resolved) that *who* cannot enter, if any."""
    for ancestor in reversed(path.parents):
        if not who.can_enter(ancestor):
            return ancestor
    return None


def interpreter_trees(python: str) -> list[Path]:
    """The trees an interpreter runs from: its executable and its (base) prefixes.

    Asked of the interpreter itself, run as whoever runs quick start.
    """
    try:
        result = subprocess.run([python, "-c", TREES_SCRIPT], capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run {python}: {exc}") from None
    try:
        paths = json.loads(result.stdout)
    except ValueError:
        error = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ConfigError(f"{python} does not run: {error}") from None
    return [Path(p).resolve() for p in paths if p]


def own_trees() -> list[Path]:
    """The trees piw-slave runs from: this interpreter, its venv and the piwheels code."""
    return [Path(sys.executable).resolve(), Path(sys.executable).parent.resolve(),
            *(Path(p).resolve() for p in {sys.prefix, sys.exec_prefix, sys.base_prefix,
                                          sys.base_exec_prefix}),
            Path(__file__).resolve().parent]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """*paths* without those that lie inside another of them."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


class Passage:
    """How to start a program as *who* so that it reaches every tree in *needs*.

    Each needed tree below a directory *who* cannot enter is bound aside into
    *stage* (an empty directory reachable by root), the closed directory is
    covered with a tmpfs, and the tree is bound back at its own path.
    """

    def __init__(self, who: Identity, needs: Iterable[Path], stage: Path) -> None:
        self.who = who
        self.needs = tuple(needs)
        self.stage = stage
        #: closed directory -> the needed trees below it
        self.openings: dict[Path, list[Path]] = {}
        for need in _outermost(n for n in self.needs if n.exists()):
            closed = closed_above(need, who)
            if closed is None:
                continue
            if not who.can_read(need):
                raise ConfigError(f"{who.name} cannot read {need} even once {closed} is "
                                  f"passable; `chmod -R o+rX {need}` lets it")
            self.openings.setdefault(closed, []).append(need)
        if stage in self.openings or any(c in stage.parents for c in self.openings):
            raise ConfigError(f"the work directory {stage} lies under {self.closed_text()}, "
                              f"which {who.name} cannot enter; set TMPDIR to another place")

    @property
    def needed(self) -> bool:
        return bool(self.openings)

    def closed_text(self) -> str:
        return ", ".join(str(c) for c in self.openings)

    def fix_command(self) -> str:
        """The command that would let *who* in without a namespace (it changes the host)."""
        return "chmod o+x " + " ".join(shlex.quote(str(c)) for c in self.openings)

    def missing_tools(self) -> list[str]:
        return [tool for tool in NAMESPACE_TOOLS if shutil.which(tool) is None]

    def command(self, argv: list[str]) -> tuple[list[str], dict]:
        """The command line and the ``subprocess.Popen`` keywords that run *argv* as *who*."""
        as_who = {"user": self.who.uid, "group": self.who.gid, "extra_groups": []}
        if os.geteuid() != 0:
            return argv, {}
        if not self.needed:
            return argv, as_who
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-ec", self._script(), "sh", *argv], {}

    def _script(self) -> str:
        q = shlex.quote
        stage = q(str(self.stage))
        lines = ["umask 022",
                 f"mount -t tmpfs -o mode=700,size=64k piwheels-stage {stage}"]
        aside: list[tuple[str, Path]] = []
        for need in (n for needs in self.openings.values() for n in needs):
            spot = f"{stage}/{len(aside)}"
            lines += [f"mkdir {spot}" if need.is_dir() else f": > {spot}",
                      f"mount --rbind {q(str(need))} {spot}"]
            aside.append((spot, need))
        for closed in self.openings:
            lines.append(f"mount -t tmpfs -o mode=755,size=1m piwheels-passage {q(str(closed))}")
        for spot, need in aside:
            lines += [f"mkdir -p {q(str(need))}" if need.is_dir() else
                      f"mkdir -p {q(str(need.parent))} && : > {q(str(need))}",
                      f"mount --rbind {spot} {q(str(need))}"]
        lines += [f"umount --lazy {stage}",
                  f'exec setpriv --reuid={self.who.uid} --regid={self.who.gid} '
                  f'--clear-groups -- "$@"']
        return "\n".join(lines)
