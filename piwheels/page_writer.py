"""Writing projects' files into the output tree: pages, logs and alias links.

Each project is written from the database alone (one read for a batch of
projects): its simple pages (HTML and JSON), its project page and JSON, its
build logs, its alias links, and the removal of the wheels its page no longer
lists.  Every write goes through a temp file and a rename.  A project whose
:class:`Fingerprint` says it did not change is not rendered at all; one without
a fingerprint has what it renders compared with the bytes on disk, and a page
whose bytes did not change is left alone.

The index writer task uses one :class:`PageWriter` itself and gives one to each
of its worker processes (each with its own database connection).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

from packaging.utils import parse_wheel_filename

from .db import Database
from .failures_page import failures_context
from .index_pages import (
    Renderer, Site, project_context, published_files, served_files,
    simple_project_context, to_json,
)
from .names import canonical_name
from .records import FileData, ProjectData, VersionData
from .storage import METADATA_SUFFIX, PAGE_FILES, OutputTree, atomic_write, remove_quietly
from .tags import Target

#: A wheel no page ever listed is removed once it is this old (a crash left it behind).
ORPHAN_AGE_S = 3600.0



def read_if_exists(path: str | Path) -> Optional[bytes]:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.readall()
    except FileNotFoundError:
        return None


def write_if_changed(path: str | Path, data: bytes, old: Optional[bytes] = None) -> bool:
    """Write *data* atomically unless *path* already holds exactly that (*old*, if the
    caller has read it already); True if written."""
    if old is None:
        old = read_if_exists(path)
    if old == data:
        return False
    atomic_write(path, data)
    return True


def listed_files(page: Optional[bytes]) -> set[str]:
    """The file names a project's JSON *page* lists (none if it is missing or unreadable)."""
    try:
        return {f["filename"] for f in json.loads(page)["files"]}
    except (ValueError, KeyError, TypeError):
        return set()


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def format_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


class Fingerprint(NamedTuple):
    """What a project's files were last written from, kept by the task in memory.

    The HTML pages are rendered from the very dicts their JSON twins are dumped
    from, so the digest of a JSON page stands for both pages' inputs: a digest
    equal to the last one written means neither page can have changed, and
    nothing is rendered, read back or written.  Build logs never change once
    written: ``logs_to`` is the highest build id whose log is on disk.  Nothing
    survives a restart: a new writer compares what it renders with the bytes on
    disk until it has fingerprints of its own.
    """

    simple: bytes
    project: bytes
    logs_to: int


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class Written:
    """What writing a batch of projects did."""

    published: dict[str, bool] = field(default_factory=dict)  # has files on its page
    pages: int = 0
    #: projects not (wholly) written, and why: a refused write (a full disk, say)
    failed: dict[str, str] = field(default_factory=dict)
    #: each wholly written project's new fingerprint (None: it is gone)
    fingerprints: dict[str, Optional[Fingerprint]] = field(default_factory=dict)
    #: projects found unchanged (nothing rendered)
    unchanged: int = 0


class PageWriter:
    """Writes projects' files into the output tree: used by the task itself and by
    each of its worker processes (every one with its own database connection)."""

    def __init__(self, db: Database, output: Path, site: Site) -> None:
        self.db = db
        self.tree = OutputTree(output)
        self.site = site
        self.renderer = Renderer(site)

    def write(self, path: str | Path, data: bytes, written: Written,
              old: Optional[bytes] = None, *, known_changed: bool = False) -> None:
        """Write *data* unless *path* holds it already (*known_changed*: its fingerprint
        says it does not, so it is not read back)."""
        if known_changed:
            atomic_write(path, data)
            written.pages += 1
        elif write_if_changed(path, data, old):
            written.pages += 1

    def write_home(self) -> Written:
        """The home page, with the farm's counts (on a large farm, seconds to count)."""
        written = Written()
        self.write(self.tree.home_page, self.renderer.render(
            "home", root="", stats=self.db.statistics(),
            updated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")), written)
        return written

    def write_failures(self) -> Written:
        """The farm-wide failures page and its JSON twin (its query weighs every
        unbuilt failure: on a large farm, seconds; see :mod:`piwheels.failures_page`)."""
        written = Written()
        context = failures_context(self.db.unbuilt_failure_counts())
        # no time stamp: a page that did not change is not written again
        self.write(self.tree.failures_page("html"),
                   self.renderer.render("failures", **context), written)
        self.write(self.tree.failures_page("json"), to_json(context), written)
        return written

    def write_packages(self, packages: Sequence[str],
                       fingerprints: Optional[Mapping[str, Fingerprint]] = None) -> Written:
        """Rewrite these projects' pages, logs and links from one read of the database
        (*fingerprints*: what each was last written from, see :class:`Fingerprint`)."""
        written = Written()
        fingerprints = fingerprints or {}
        packages = [canonical_name(package) for package in packages]
        projects = self.db.get_projects(packages)
        targets = self.db.get_build_targets()
        logs: dict[str, list[int]] = {}
        for package in packages:
            project = projects.get(package)
            try:
                if project is None:
                    self._remove_project(package)
                    written.published[package] = False
                    written.fingerprints[package] = None
                else:
                    before = fingerprints.get(package)
                    written.published[package], fingerprint = self._write_project(
                        project, targets, written, before)
                    written.fingerprints[package] = fingerprint
                    logs[package] = [b.build_id for v in project.versions for b in v.builds
                                     if before is None or b.build_id > before.logs_to]
            except OSError as exc:
                written.failed[package] = str(exc)
        build_ids = {build_id: package for package, ids in logs.items() for build_id in ids}
        for build_id, reason in self._write_logs(list(build_ids)).items():
            written.failed.setdefault(build_ids[build_id], reason)
        for package in written.failed:
            written.fingerprints.pop(package, None)  # written again in full
        for package, ids in logs.items():
            fingerprint = written.fingerprints.get(package)
            if fingerprint is not None and ids:
                written.fingerprints[package] = fingerprint._replace(logs_to=max(
                    max(ids), fingerprint.logs_to))
        return written

    def _remove_project(self, package: str) -> None:
        self.tree.remove_project(package)
        self._remove_aliases(package)

    def _write_project(self, project: ProjectData, targets: list[Target], written: Written,
                       before: Optional[Fingerprint]) -> tuple[bool, Fingerprint]:
        """Write what changed of one project (everything, compared with the disk, if
        *before* is None); whether its wheels are served, and its new fingerprint."""
        package = project.package
        simple_dir = self.tree.simple_dir(package)
        project_dir = self.tree.project_dir(package)
        recorded = published_files(project)
        aliases = self.site.platform_aliases.of(f.filename for _, f in recorded)
        filenames = [f.filename for _, f in recorded] + [
            alias for names in aliases.values() for alias in names]
        if not project.status.withheld:
            # a lifted quarantine: its wheels back first, so their aliases link (and list)
            self.tree.restore(package, filenames)
        files, listed_aliases = self._with_aliases(package, served_files(project), aliases)
        # (a quarantined project's page says so, and lists nothing)
        simple = simple_project_context(project, self.site, files) if recorded else None
        simple_json = to_json(simple) if simple is not None else b""
        context = project_context(project, targets, self.site, listed_aliases)
        project_json = to_json(context)
        now = Fingerprint(digest(simple_json), digest(project_json),
                          0 if before is None else before.logs_to)
        if before is not None and now.simple == before.simple \
                and now.project == before.project:
            written.unchanged += 1
            return bool(files), now
        project_changed = before is None or now.project != before.project
        if project_changed and project.status.withheld:
            self.tree.withhold(package, filenames)
        if before is None or now.simple != before.simple:
            page_path = simple_dir / "index.json"
            page_before = read_if_exists(page_path)
            if simple is not None:
                self.write(simple_dir / "index.html",
                           self.renderer.render("simple_project", **simple,
                                                project_status=simple["project-status"]),
                           written, known_changed=before is not None)
                self.write(page_path, simple_json, written, page_before)
            else:
                # no wheel at all: no simple page (a 404), so no client is sent here
                for name in PAGE_FILES:
                    remove_quietly(simple_dir / name)
            self._prune(simple_dir, {f.filename for _, f in files}, listed_files(page_before))
        if project_changed:
            known = before is not None
            self.write(self.tree.project_json(package), project_json, written,
                       known_changed=known)
            self.write(project_dir / "index.html", self.renderer.render(
                "project", format_size=format_size, **context), written, known_changed=known)
            self._write_aliases(package, project.names)
        return bool(files), now  # in the root: a project whose wheels are served

    def _with_aliases(self, package: str, files: list[tuple[VersionData, FileData]],
                      aliases: dict[str, tuple[str, ...]],
                      ) -> tuple[list[tuple[VersionData, FileData]], dict[str, list[str]]]:
        """*files* with their platform aliases (see :mod:`piwheels.platform_aliases`),
        each linked in place first and listed only if it is: the same bytes, so the
        same size, hashes and metadata; and {file: its aliases listed}."""
        if not aliases:
            return files, {}
        listed: dict[str, list[str]] = {}
        with_aliases = list(files)
        for version, f in files:
            for alias in aliases.get(f.filename, ()):
                if self.tree.link_alias(package, f.filename, alias):
                    platform = parse_wheel_filename(alias)[3]
                    with_aliases.append((version, replace(
                        f, filename=alias,
                        platform_tag=".".join(sorted({t.platform for t in platform})))))
                    listed.setdefault(f.filename, []).append(alias)
        with_aliases.sort(key=lambda pair: pair[1].filename)
        return with_aliases, listed

    def _prune(self, directory: Path, listed: set[str], listed_before: set[str]) -> None:
        """Remove the wheels (and their .metadata) the page no longer lists.

        Only files the previous page listed go at once (gone upstream, or their
        build was dropped).  A wheel the page never listed may be one the build
        recorder has published but not yet recorded, so it is left alone unless
        it is older than :data:`ORPHAN_AGE_S` (left behind by a crash).
        """
        if not directory.is_dir():
            return
        now = time.time()
        for entry in directory.iterdir():
            name = entry.name
            if name in PAGE_FILES or name.startswith("."):
                continue
            wheel = name[:-len(METADATA_SUFFIX)] if name.endswith(METADATA_SUFFIX) else name
            if wheel in listed:
                continue
            if wheel in listed_before or _age_s(entry, now) > ORPHAN_AGE_S:
                remove_quietly(entry)

    def _write_logs(self, build_ids: list[int]) -> dict[int, str]:
        """Write the logs not written yet (a build's log never changes); the ones
        the file system refused, and why."""
        failed = {}
        missing = [b for b in build_ids if not self.tree.build_log(b).exists()]
        for build_id, text in self.db.get_build_logs(missing).items():
            try:
                atomic_write(self.tree.build_log(build_id),
                             gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0))
            except OSError as exc:
                failed[build_id] = str(exc)
        return failed

    def _write_aliases(self, package: str, names: tuple[str, ...]) -> None:
        """Other spellings of the name lead to the canonical directories (symlinks)."""
        for section in self.tree.alias_dirs():
            for name in names:
                if name == package or "/" in name:
                    continue
                link = section / name
                if link.is_symlink() and os.readlink(link) == package:
                    continue
                if link.exists() and not link.is_symlink():
                    continue  # a real directory: never clobber
                self.tree.link(link, package)

    def _remove_aliases(self, package: str) -> None:
        for directory in self.tree.alias_dirs():
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                if entry.is_symlink() and os.readlink(entry) == package:
                    remove_quietly(entry)
