"""The output tree's one owner: every path under the output directory is named
here, and every write into it goes through here (temp file, then rename).

A reader (the web server, pip) sees either the old file or the new one, never
half of one.  A wheel is published in three steps: it is *staged* (the
verified file and its core metadata wait under ``.transfers/``), its rows are
committed, and only then is it *put in place* with a rename.  A crash between
the steps leaves a staged file (removed at the next start) or a row whose file
is missing (its build re-queued at the next start, see
:mod:`piwheels.master.reconcile`), never a served file without a row.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

#: The served PEP 503/691 tree: simple/<pkg>/index.html, index.json, <wheel>, <wheel>.metadata
SIMPLE_DIR = "simple"
#: Human pages and the JSON API: project/<pkg>/index.html, project/<pkg>/json/index.json
PROJECT_DIR = "project"
#: Build logs, gzipped, by build id (see :func:`log_path`)
LOGS_DIR = "logs"
#: The farm-wide failures page: failures/index.html, failures/json/index.json
FAILURES_DIR = "failures"
STATIC_DIR = "static"
#: Where a quarantined project's wheels wait, under the output path (PEP 792):
#: a dot-directory, which the documented web-server configurations never serve.
WITHHELD_DIR = ".withheld"
#: Where files being received and files staged for publishing wait (a
#: dot-directory, never served; emptied at every start).
TRANSFERS_DIR = ".transfers"
#: Where the reconciliation at start sets wheels without a row aside (never
#: served, never deleted by the master: the operator looks, then deletes).
ORPHANED_DIR = ".orphaned"
#: A wheel's PEP 658 core metadata sits beside it under this suffix.
METADATA_SUFFIX = ".metadata"
#: A file still being received.
PART_SUFFIX = ".part"
#: A project directory's pages.
PAGE_FILES = frozenset({"index.html", "index.json"})

#: The temp names :func:`atomic_write` and :meth:`OutputTree.link` use while writing.
_TEMP_NAME = re.compile(r"^\..+\.\d+\.\d+\.tmp$|^\..+\.link$")


def log_path(build_id: int) -> str:
    """Where a build's log lives under logs/: 0000/0001/2345.txt.gz for build 12345."""
    digits = f"{build_id:012d}"
    return f"{digits[:4]}/{digits[4:8]}/{digits[8:]}.txt.gz"


def is_temp_name(name: str) -> bool:
    """Whether *name* is one of this module's temp files (left by a crash if seen at start)."""
    return bool(_TEMP_NAME.match(name))


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write *data* to *path* through a temp file in the same directory.

    The temp file is a dot-file named for this process and thread, so writers
    never share one, and it costs no more system calls than the write itself
    (the index writer makes hundreds of thousands of these in a full rewrite).
    """
    directory, name = os.path.split(os.fspath(path))
    # (cut long names short: the temp name must fit the file system's limit too)
    temp = os.path.join(directory, f".{name[:180]}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, mode)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(temp, flags, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # whatever the umask
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def atomic_move(source: Path, dest: Path, *, mode: int = 0o644) -> None:
    """Move *source* into place as *dest* (same file system: one rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(source, mode)
    os.replace(source, dest)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class StagedWheel:
    """A verified wheel and its core metadata waiting under ``.transfers/`` to be put
    in place, once its rows are committed."""

    package: str
    filename: str
    wheel: Path
    metadata: Path
    withheld: bool


@dataclass(frozen=True)
class WheelOnDisk:
    """A wheel file found in the served tree or the withheld one."""

    package: str
    filename: str
    path: Path
    withheld: bool


class OutputTree:
    """The output directory: what lives where, and the moves between the places."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.simple = self.root / SIMPLE_DIR
        self.project = self.root / PROJECT_DIR
        self.logs = self.root / LOGS_DIR
        self.static = self.root / STATIC_DIR
        self.withheld = self.root / WITHHELD_DIR
        self.transfers = self.root / TRANSFERS_DIR
        self.orphaned = self.root / ORPHANED_DIR

    def __repr__(self) -> str:
        return f"OutputTree({str(self.root)!r})"

    # --- names ------------------------------------------------------------------

    @property
    def home_page(self) -> Path:
        return self.root / "index.html"

    @property
    def packages_json(self) -> Path:
        return self.root / "packages.json"

    @property
    def sitemap(self) -> Path:
        return self.root / "sitemap.xml"

    @property
    def style_sheet(self) -> Path:
        return self.static / "style.css"

    def simple_page(self, suffix: str) -> Path:
        """The simple root's page: ``html`` or ``json``."""
        return self.simple / f"index.{suffix}"

    def simple_dir(self, package: str, *, withheld: bool = False) -> Path:
        """Where a project's wheels are (served, or withheld while quarantined)."""
        return (self.withheld if withheld else self.simple) / package

    def project_dir(self, package: str) -> Path:
        return self.project / package

    def project_json(self, package: str) -> Path:
        return self.project / package / "json" / "index.json"

    def failures_page(self, suffix: str) -> Path:
        """The failures page ("html") or its JSON twin ("json")."""
        directory = self.root / FAILURES_DIR
        return directory / "index.html" if suffix == "html" else directory / "json" / "index.json"

    def wheel(self, package: str, filename: str, *, withheld: bool = False) -> Path:
        return self.simple_dir(package, withheld=withheld) / filename

    @staticmethod
    def metadata_of(wheel: Path) -> Path:
        return wheel.with_name(wheel.name + METADATA_SUFFIX)

    def build_log(self, build_id: int) -> Path:
        return self.logs / log_path(build_id)

    def alias_dirs(self) -> tuple[Path, Path]:
        """The sections where other spellings of a name are links to the canonical one."""
        return self.simple, self.project

    # --- the transfers directory ---------------------------------------------------

    def clear_transfers(self) -> list[Path]:
        """Empty ``.transfers/`` (whatever an earlier run left there is worthless); the
        entries removed."""
        removed = sorted(self.transfers.iterdir()) if self.transfers.is_dir() else []
        for entry in removed:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                remove_quietly(entry)
        self.transfers.mkdir(parents=True, exist_ok=True)
        return removed

    def part_file(self, slave_id: int, filename: str) -> Path:
        """A new name for a file being received from a slave."""
        return self.transfers / f"{slave_id}-{uuid.uuid4().hex[:12]}-{filename}{PART_SUFFIX}"

    @staticmethod
    def received(part: Path) -> Path:
        """The name a completely received (verified) file takes."""
        return part.with_name(part.name[:-len(PART_SUFFIX)])

    def import_copy(self) -> Path:
        """A new name for piw-import's copy of a wheel."""
        self.transfers.mkdir(parents=True, exist_ok=True)
        return self.transfers / f"import-{uuid.uuid4().hex}.whl"

    # --- publishing -------------------------------------------------------------------

    def stage(self, package: str, filename: str, received: Path, metadata: bytes, *,
              withheld: bool = False) -> StagedWheel:
        """Write a received wheel's core metadata beside it (under ``.transfers/``,
        where the receiver left it); nothing is served yet."""
        staged_metadata = received.with_name(received.name + METADATA_SUFFIX)
        atomic_write(staged_metadata, metadata)
        return StagedWheel(package=package, filename=filename, wheel=received,
                           metadata=staged_metadata, withheld=withheld)

    def put_in_place(self, staged: StagedWheel) -> Path:
        """Rename a staged wheel (metadata first) into the index: call only once its
        rows are committed.  A file already there cannot have a row (the database
        refuses two rows for one name), so it is a crash's leftover and is replaced."""
        wheel = self.wheel(staged.package, staged.filename, withheld=staged.withheld)
        atomic_move(staged.metadata, self.metadata_of(wheel))
        atomic_move(staged.wheel, wheel)
        return wheel

    def discard(self, staged: Iterable[StagedWheel]) -> None:
        for item in staged:
            self.discard_received(item.wheel)

    @staticmethod
    def discard_received(received: Path) -> None:
        """Remove a received (or staged) file with the metadata staged beside it."""
        remove_quietly(received)
        remove_quietly(received.with_name(received.name + METADATA_SUFFIX))

    def unpublish(self, package: str, filename: str) -> None:
        """Remove a wheel and its metadata, served or withheld, with every other name
        of that file beside it (its platform aliases: hard links of it)."""
        for withheld in (False, True):
            wheel = self.wheel(package, filename, withheld=withheld)
            for name in [*other_names(wheel), wheel]:
                remove_quietly(name)
                remove_quietly(self.metadata_of(name))

    def link_alias(self, package: str, filename: str, alias: str) -> bool:
        """Serve the wheel *filename* (and its metadata) under the name *alias* too:
        hard links, so the bytes, size and hash are the wheel's own.  True once the
        alias is in place; False if the wheel is not served here, or another file
        holds the alias name or its metadata's (never replaced: a real wheel of
        that name, perhaps being put in place right now)."""
        wheel, link = self.wheel(package, filename), self.wheel(package, alias)
        if link.exists() and not same_file(wheel, link):
            return False  # (checked first: no metadata of ours beside another's wheel)
        for source, target in ((self.metadata_of(wheel), self.metadata_of(link)),
                               (wheel, link)):
            try:
                os.link(source, target)
            except FileExistsError:
                pass
            except FileNotFoundError:
                return False
            if not same_file(source, target):
                return False
        return True

    def withhold(self, package: str, filenames: Iterable[str]) -> None:
        """Move a quarantined project's wheels (and metadata) out of the served tree
        into :data:`WITHHELD_DIR`, where nothing is served and nothing is lost."""
        self._move(filenames, self.simple_dir(package), self.simple_dir(package, withheld=True))

    def restore(self, package: str, filenames: Iterable[str]) -> None:
        """Put withheld wheels back where they are served (the quarantine was lifted)."""
        held = self.simple_dir(package, withheld=True)
        if held.is_dir():
            self._move(filenames, held, self.simple_dir(package))
            shutil.rmtree(held, ignore_errors=True)  # what no build lists any more

    @staticmethod
    def _move(filenames: Iterable[str], source: Path, target: Path) -> None:
        for filename in filenames:
            for name in (filename, filename + METADATA_SUFFIX):
                if (source / name).exists() and not (target / name).exists():
                    target.mkdir(parents=True, exist_ok=True)
                    os.replace(source / name, target / name)

    def set_aside(self, wheel: WheelOnDisk) -> Path:
        """Move a wheel without a row (and its metadata) out of the index into
        :data:`ORPHANED_DIR`; where it went."""
        target = self.orphaned / wheel.package
        target.mkdir(parents=True, exist_ok=True)
        metadata = self.metadata_of(wheel.path)
        if metadata.exists():
            os.replace(metadata, self.metadata_of(target / wheel.filename))
        os.replace(wheel.path, target / wheel.filename)
        return target / wheel.filename

    def remove_project(self, package: str) -> None:
        for directory in (self.simple_dir(package), self.project_dir(package),
                          self.simple_dir(package, withheld=True)):
            shutil.rmtree(directory, ignore_errors=True)

    def link(self, link: Path, target: str) -> None:
        """Make *link* a symlink to *target* atomically (an alias of a project)."""
        temp = link.with_name(f".{link.name}.link")
        temp.parent.mkdir(parents=True, exist_ok=True)
        remove_quietly(temp)
        temp.symlink_to(target)
        os.replace(temp, link)

    # --- what is there (for the reconciliation at start) --------------------------

    def wheels_on_disk(self) -> Iterator[WheelOnDisk]:
        """Every wheel file in the served tree and the withheld one (aliases skipped)."""
        for withheld, section in ((False, self.simple), (True, self.withheld)):
            for project in _entries(section):
                if project.name.startswith(".") or not project.is_dir(follow_symlinks=False):
                    continue
                for entry in _entries(Path(project.path)):
                    if entry.name.endswith(".whl") and not entry.name.startswith(".") \
                            and entry.is_file(follow_symlinks=False):
                        yield WheelOnDisk(package=project.name, filename=entry.name,
                                          path=Path(entry.path), withheld=withheld)

    def orphan_metadata(self) -> Iterator[Path]:
        """Core metadata files whose wheel is not beside them."""
        for section in (self.simple, self.withheld):
            for project in _entries(section):
                if project.name.startswith(".") or not project.is_dir(follow_symlinks=False):
                    continue
                for entry in _entries(Path(project.path)):
                    if entry.name.endswith(METADATA_SUFFIX) and not os.path.exists(
                            entry.path[:-len(METADATA_SUFFIX)]):
                        yield Path(entry.path)

    def temp_files(self) -> Iterator[Path]:
        """Temp files an interrupted write left anywhere in the tree (``.transfers/`` and
        ``.orphaned/`` aside)."""
        for directory, subdirs, files in os.walk(self.root):
            if directory == str(self.root):
                subdirs[:] = [d for d in subdirs if d not in (TRANSFERS_DIR, ORPHANED_DIR)]
            for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
                if is_temp_name(name):
                    yield Path(directory, name)


def same_file(one: Path, other: Path) -> bool:
    """Whether two names are one file (hard links of each other); False if either is missing."""
    try:
        return os.path.samestat(one.lstat(), other.lstat())
    except FileNotFoundError:
        return False


def other_names(wheel: Path) -> list[Path]:
    """The other wheel names in *wheel*'s directory that are the same file (aliases)."""
    try:
        own = wheel.lstat()
    except FileNotFoundError:
        return []
    return [Path(entry.path) for entry in _entries(wheel.parent)
            if entry.name != wheel.name and entry.name.endswith(".whl")
            and entry.is_file(follow_symlinks=False)
            and os.path.samestat(entry.stat(follow_symlinks=False), own)]


def _entries(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
