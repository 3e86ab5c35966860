"""Skipping or removing many projects or releases at once (piw-add --skip, piw-remove).

A target is a project name or a shell-style pattern over canonical names
(``mycompany-*``), optionally with versions: a pattern over normalised versions
(``1.*``) or a comma-separated list (``1.0,1.1``).  :func:`plan` finds what a
target names, refusing one that names nothing (or a listed version that does
not exist); :func:`apply` makes the change in the caller's transaction and says
what changed, so a dry run is the same work rolled back.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Optional

from ..db import Database
from ..errors import PiwheelsError, UnknownPackage, UnknownVersion
from ..names import WILDCARDS, canonical_name, is_pattern, normal_version
from ..protocols import BULK_ACTIONS

@dataclass
class Target:
    """What a bulk request names: each project with its releases (None: the project)."""

    releases: dict[str, Optional[list[str]]] = field(default_factory=dict)


def plan(db: Database, package: str, versions: Optional[str]) -> Target:
    """The projects (and releases) *package* and *versions* name; raises a
    :class:`PiwheelsError` when they name nothing or a listed version is unknown."""
    if any(c in package for c in WILDCARDS):
        regex = re.compile(fnmatch.translate(package.lower()))
        packages = [p for p in db.all_packages() if regex.fullmatch(p)]
        if not packages:
            raise UnknownPackage(f"no project matches {package!r}")
    else:
        packages = [canonical_name(package)]
        if db.get_project(packages[0]) is None:
            raise UnknownPackage(f"unknown package {packages[0]}")
    target = Target()
    if versions is None:
        target.releases = {p: None for p in packages}
        return target
    known = {p: db.get_versions(p) for p in packages}
    if any(c in versions for c in WILDCARDS):
        regex = re.compile(fnmatch.translate(versions))
        for p in packages:
            found = sorted(v for v in known[p] if regex.fullmatch(v))
            if found:
                target.releases[p] = found
        if not target.releases:
            raise UnknownVersion(f"no release of {_named(package, packages)} matches "
                                 f"{versions!r}")
        return target
    listed = list(dict.fromkeys(normal_version(v.strip()) for v in versions.split(",")
                                if v.strip()))
    if not listed:
        raise UnknownVersion(f"{versions!r} names no versions")
    missing = [v for v in listed if not any(v in known[p] for p in packages)]
    if missing:
        raise UnknownVersion(f"{_named(package, packages)} has no release {', '.join(missing)}")
    for p in packages:
        found = [v for v in listed if v in known[p]]
        if found:
            target.releases[p] = found
    return target


def _named(pattern: str, packages: list[str]) -> str:
    return packages[0] if len(packages) == 1 and not is_pattern(pattern) else \
        f"any project matching {pattern!r}"


@dataclass
class Outcome:
    """What a bulk change did (or, rolled back, would do)."""

    changes: int = 0
    summary: str = ""
    #: wheels and build logs that must leave the output tree
    filenames: dict[str, list[str]] = field(default_factory=dict)
    build_ids: list[int] = field(default_factory=list)
    #: projects (with a release, or None) the slave driver must drop or may rebuild
    cancel: list[tuple[str, Optional[str]]] = field(default_factory=list)
    requeue: list[tuple[str, Optional[str]]] = field(default_factory=list)
    packages: set[str] = field(default_factory=set)


def apply(db: Database, target: Target, action: str, reason: Optional[str]) -> Outcome:
    """Make the change *action* (one of :data:`BULK_ACTIONS`) to *target*, inside the
    caller's transaction."""
    if action not in BULK_ACTIONS:
        raise PiwheelsError(f"unknown bulk action {action!r}")
    if action in ("skip", "skip_builds") and not reason:
        raise PiwheelsError("skipping needs a reason")
    out = Outcome()
    projects = releases = builds = 0
    for package, versions in sorted(target.releases.items()):
        project = db.get_project(package)
        if project is None:
            continue
        wanted = [v for v in project.versions if versions is None or v.version in versions]
        if action in ("remove", "remove_builds", "skip_builds"):
            out.filenames[package] = [f.filename for v in wanted for b in v.builds
                                      for f in b.files]
            out.build_ids += [b.build_id for v in wanted for b in v.builds]
        changed = False
        if action in ("skip", "unskip"):
            new = reason if action == "skip" else None
            if versions is None:
                if project.skip_reason != new:
                    db.skip_package(package, new)
                    changed = True
            else:
                for v in wanted:
                    if v.skip_reason != new:
                        db.skip_version(package, v.version, new)
                        releases += 1
                        changed = True
        elif action == "remove":
            if versions is None:
                changed = db.remove_package(package)
            else:
                for v in wanted:
                    if db.remove_version(package, v.version):
                        releases += 1
                        changed = True
        else:
            for version in versions or [None]:
                count = db.remove_builds(package, version)
                builds += count
                changed = changed or count > 0
                if action == "skip_builds":
                    current = project.skip_reason if version is None else \
                        next(v.skip_reason for v in wanted if v.version == version)
                    if current != reason:
                        if version is None:
                            db.skip_package(package, reason)
                        else:
                            db.skip_version(package, version, reason)
                            releases += 1
                        changed = True
        if changed:
            projects += 1
            out.packages.add(package)
            jobs = [(package, None)] if versions is None else [(package, v) for v in versions]
            if action == "remove_builds":
                out.requeue += jobs
            elif action != "unskip":
                out.cancel += jobs
    whole = all(v is None for v in target.releases.values())
    counted = projects if whole else releases
    out.changes = {"remove_builds": builds, "skip_builds": builds + counted}.get(action, counted)
    out.summary = _summary(action, whole, projects, releases, builds, reason)
    return out


def _summary(action: str, whole: bool, projects: int, releases: int, builds: int,
             reason: Optional[str]) -> str:
    """What was (or would be) done, as "<count> ... <verb>"."""
    what = f"{projects} project(s)" if whole else f"{releases} release(s) of {projects} project(s)"
    if action == "skip":
        return f"{what} not to be built: {reason}"
    if action == "unskip":
        return f"{what} to be built again"
    if action == "remove":
        return f"{what} removed with their builds and wheels"
    done = f"{builds} build(s) of {projects} project(s) removed with their wheels and logs"
    return done + (f", not to be built: {reason}" if action == "skip_builds" else
                   ", to be built again")
