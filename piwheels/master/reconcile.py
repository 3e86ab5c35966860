"""What the master does at start, before any task runs: make the output tree and
the database agree again after a crash.

* a row whose wheel (or its ``.metadata``) is missing, or whose wheel has the
  wrong size: the attempt is deleted, so the build queue builds it again (and
  what else that attempt published goes with it, below);
* a wheel without a row: taken out of the index, set aside under
  ``.orphaned/<project>/`` with its metadata (the release is built again, since
  it has no attempt; re-adopting the file would mean trusting what nothing
  vouches for).  It is moved, not deleted: a master started on the wrong
  database, or on a restored older one, must not destroy wheels that cannot
  always be built again.  The operator deletes ``.orphaned/`` after a look.
* a ``.metadata`` file without its wheel, a temp file of an interrupted write,
  anything under ``.transfers/``: removed.
* platform aliases (:mod:`piwheels.platform_aliases`): an alias is a hard link
  of a recorded wheel under a name no row has.  One the configuration still
  names, of a wheel kept, stays; any other second name of a file (the alias
  of a wheel whose row went, a stale one of an older file of that name, one
  the configuration no longer names) is removed, since the bytes stay under
  the first name (or are set aside there).  A project missing an alias has its
  pages written again, which links it.

Each thing done is logged on one line, then a summary.  The wheels' SHA-256 is
not read again here (a full index is too large to hash at every start): a
file is only ever put in place whole, by a rename, after its hash was checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..db import Database
from ..platform_aliases import NO_ALIASES, PlatformAliases
from ..storage import ORPHANED_DIR, OutputTree, remove_quietly, same_file
from ..tags import Target

log = logging.getLogger("piwheels.master.reconcile")


@dataclass
class Reconciliation:
    """What the reconciliation did."""

    requeued: list[int] = field(default_factory=list)  # build ids deleted
    set_aside: list[Path] = field(default_factory=list)  # wheels without a row, moved
    #: stray metadata, temp and staged files
    leftovers: list[Path] = field(default_factory=list)
    #: projects whose pages must be written again
    packages: set[str] = field(default_factory=set)

    def summary(self) -> str:
        if not (self.requeued or self.set_aside or self.leftovers):
            return "output and database agree"
        return (f"reconciled output with the database: {len(self.requeued)} build(s) "
                f"re-queued, {len(self.set_aside)} wheel(s) without a row set aside in "
                f"{ORPHANED_DIR}/, "
                f"{len(self.leftovers)} stray or temporary file(s) removed")


def reconcile(db: Database, tree: OutputTree,
              aliases: PlatformAliases = NO_ALIASES) -> Reconciliation:
    """Make *tree* and *db* agree (see the module's docstring), with *aliases* the
    platform aliases configured; what was done."""
    done = Reconciliation()
    rows = db.recorded_files()
    checked = len(rows)
    on_disk = {(w.package, w.filename): w for w in tree.wheels_on_disk()}
    # (a withheld project's wheels may be in either place until its page is written)
    withheld = {(w.package, w.filename) for w in on_disk.values() if w.withheld}

    broken: dict[int, str] = {}
    for row in rows:
        key = (row.package, row.filename)
        wheel = on_disk.get(key)
        if wheel is None:
            problem = "is missing"
        elif _size(wheel.path) != row.size:
            problem = f"is {_size(wheel.path)} bytes, not {row.size}"
        elif not tree.metadata_of(wheel.path).exists():
            problem = "has no .metadata"
        else:
            continue
        if row.build_id not in broken:
            broken[row.build_id] = problem
            log.warning("re-queued %s %s for %s (deleted build %d): %s %s", row.package,
                        row.version, Target(row.abi_tag, row.platform_tag), row.build_id,
                        row.filename, problem)
            done.packages.add(row.package)
    if broken:
        db.requeue_builds(broken)
        done.requeued = sorted(broken)
        rows = [row for row in rows if row.build_id not in broken]

    kept = {(row.package, row.filename) for row in rows}
    by_package: dict[str, list[str]] = {}
    for package, filename in kept:
        by_package.setdefault(package, []).append(filename)
    # {(package, alias): (package, the kept wheel it is a name of)}
    expected = {(package, alias): (package, filename)
                for package, filenames in by_package.items()
                for filename, names in aliases.of(filenames).items() for alias in names}
    for key, source in expected.items():
        if key not in on_disk and not on_disk[source].withheld:
            done.packages.add(key[0])  # linked when its pages are written
    # files whose bytes stay under some name: kept rows, then what is set aside
    preserved = {_identity(on_disk[key].path) for key in kept}
    for key, wheel in sorted(on_disk.items()):
        if key in kept:
            continue
        if key in expected and same_file(wheel.path, on_disk[expected[key]].path):
            continue
        if key in expected or _identity(wheel.path) in preserved:
            # a second name of bytes kept under the first: nothing is lost
            for path in (wheel.path, tree.metadata_of(wheel.path)):
                remove_quietly(path)
            done.leftovers.append(wheel.path)
            done.packages.add(wheel.package)
            log.warning("removed %s: %s", _relative(tree, wheel.path),
                        "a stale platform alias" if key in expected else
                        "another name of a wheel kept (a platform alias no longer made)")
            continue
        where = "withheld" if key in withheld else "served"
        try:
            moved = tree.set_aside(wheel)
        except OSError as exc:  # (a leftover no longer blocks a publish: carry on)
            log.error("could not move %s out of the index: %s", _relative(tree, wheel.path), exc)
            continue
        preserved.add(_identity(moved))
        done.set_aside.append(moved)
        log.warning("moved %s (%s) to %s: no database row", _relative(tree, wheel.path),
                    where, _relative(tree, moved.parent))
        done.packages.add(wheel.package)
    for path in tree.orphan_metadata():
        remove_quietly(path)
        done.leftovers.append(path)
        log.warning("removed %s: its wheel is missing", _relative(tree, path))
    for path in list(tree.temp_files()):
        remove_quietly(path)
        done.leftovers.append(path)
        log.info("removed %s: an interrupted write's temp file", _relative(tree, path))
    for path in tree.clear_transfers():
        done.leftovers.append(path)
        log.info("removed %s: an interrupted transfer's or publish's file",
                 _relative(tree, path))
    log.info("%s (%d recorded files checked)", done.summary(), checked)
    return done


def _identity(path: Path) -> tuple[int, int]:
    """(device, inode): the same for every name of one file."""
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return (-1, -1)
    return stat.st_dev, stat.st_ino


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _relative(tree: OutputTree, path: Path) -> str:
    try:
        return str(path.relative_to(tree.root))
    except ValueError:
        return str(path)
