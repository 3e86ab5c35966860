"""index_writer: keeps the static output tree in step with the database.

Requests name a package (or the home page, or everything); bursts are
coalesced and each package is rewritten from the database alone: its simple
pages (HTML and JSON), its project page and JSON, its build logs, and the
removal of files the database no longer lists.  Every write goes through a
temp file and a rename, and a page whose bytes did not change is left alone.
The simple root, packages.json and the sitemap are rewritten only when the
set of published projects changes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import zmq

from ..db import Database
from ..errors import InvalidName
from ..index_pages import (
    Renderer, Site, log_path, project_context, published_files, simple_project_context,
    simple_root_context, to_json,
)
from ..names import canonical_name
from ..protocols import INDEX_REQUESTS
from ..resources import templates_dir
from ..storage import atomic_write, remove_quietly
from .task import Clock, Task

#: The longest one batch of page writing runs before the task looks at its sockets.
SLICE_S = 0.5
PAGE_FILES = {"index.html", "index.json"}
METADATA_SUFFIX = ".metadata"
#: A wheel no page ever listed is removed once it is this old (a crash left it behind).
ORPHAN_AGE_S = 3600.0


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write *data* atomically unless *path* already holds exactly that; True if written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data)
    return True


def listed_files(page: Path) -> set[str]:
    """The file names a project's JSON page lists (none if it is missing or unreadable)."""
    try:
        return {f["filename"] for f in json.loads(page.read_bytes())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
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


class IndexWriter(Task):
    name = "index_writer"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path, site: Site,
                 coalesce_s: float = 0.5, home_interval_s: float = 60.0,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.dsn = dsn
        self.output = Path(output_path)
        self.site = site
        self.renderer = Renderer(site)
        self.db: Optional[Database] = None
        self.dirty: dict[str, None] = {}  # insertion-ordered set
        self.root: Optional[set[str]] = None
        self.root_dirty = True
        self.home_dirty = True
        self.pages_written = 0
        self.requests = self.socket(zmq.PULL, INDEX_REQUESTS.reverse())
        self.requests.bind(INDEX_REQUESTS.address)
        self.register(self.requests, self.handle_request)
        self.every(coalesce_s, self.flush)
        self.every(home_interval_s, self.want_home)

    def on_start(self) -> None:
        self.db = Database(self.dsn)
        self.write_static()

    def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "PACKAGE":
            try:
                self.dirty[canonical_name(payload["package"])] = None
            except InvalidName as exc:
                self.log.error("dropped a page request: %s", exc)
        elif name == "HOME":
            self.home_dirty = True
        elif name == "ROOT":
            self.root_dirty = True
        else:
            self.rewrite_all()

    def want_home(self) -> None:
        self.home_dirty = True

    # --- writing ----------------------------------------------------------------

    def flush(self) -> None:
        deadline = self.clock() + SLICE_S
        while self.dirty and self.clock() < deadline:
            package = next(iter(self.dirty))
            del self.dirty[package]
            self.write_package(package)
        if self.root_dirty and not self.dirty:
            self.write_root()
        if self.home_dirty and not self.dirty:
            self.write_home()

    def rewrite_all(self) -> None:
        """Queue every package for rewriting, plus the root and home pages."""
        for package in self.db.all_packages():
            self.dirty[package] = None
        self.root_dirty = self.home_dirty = True
        self.root = None

    def write_package(self, package: str) -> None:
        project = self.db.get_project(package)
        simple_dir = self.output / "simple" / package
        project_dir = self.output / "project" / package
        if project is None:
            for directory in (simple_dir, project_dir):
                shutil.rmtree(directory, ignore_errors=True)
            self._remove_aliases(package)
            self._root_membership(package, False)
            return
        files = published_files(project)
        simple = simple_project_context(project, self.site)
        listed_before = listed_files(simple_dir / "index.json")
        self._write(simple_dir / "index.html", self.renderer.render("simple_project", **simple))
        self._write(simple_dir / "index.json", to_json(simple))
        self._prune(simple_dir, {f.filename for _, f in files}, listed_before)
        abis = self.db.get_build_abis()
        context = project_context(project, abis, self.site)
        self._write(project_dir / "json" / "index.json", to_json(context))
        self._write(project_dir / "index.html", self.renderer.render(
            "project", format_size=format_size, **context))
        for version in project.versions:
            for build in version.builds:
                self._write_log(build.build_id)
        self._write_aliases(package, project.names)
        self._root_membership(package, bool(files))

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

    def _write(self, path: Path, data: bytes) -> None:
        if write_if_changed(path, data):
            self.pages_written += 1

    def _write_log(self, build_id: int) -> None:
        path = self.output / "logs" / log_path(build_id)
        if path.exists():
            return
        text = self.db.get_build_log(build_id)
        if text is not None:
            atomic_write(path, gzip.compress(text.encode("utf-8"), mtime=0))

    def _write_aliases(self, package: str, names: tuple[str, ...]) -> None:
        """Other spellings of the name lead to the canonical directories (symlinks)."""
        for section in ("simple", "project"):
            for name in names:
                if name == package or "/" in name:
                    continue
                link = self.output / section / name
                if link.is_symlink() and os.readlink(link) == package:
                    continue
                if link.exists() and not link.is_symlink():
                    continue  # a real directory: never clobber
                temp = link.with_name(f".{name}.link")
                remove_quietly(temp)
                temp.symlink_to(package)
                os.replace(temp, link)

    def _remove_aliases(self, package: str) -> None:
        for section in ("simple", "project"):
            directory = self.output / section
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                if entry.is_symlink() and os.readlink(entry) == package:
                    remove_quietly(entry)

    def _root_membership(self, package: str, published: bool) -> None:
        if self.root is None:
            return  # the next root write reads the whole list anyway
        if published and package not in self.root:
            self.root.add(package)
            self.root_dirty = True
        elif not published and package in self.root:
            self.root.discard(package)
            self.root_dirty = True

    def write_root(self) -> None:
        """The simple root, packages.json (name and description, for search) and sitemap."""
        described = self.db.packages_with_files()
        self.root = set(described)
        packages = sorted(described)
        context = simple_root_context(packages)
        simple = self.output / "simple"
        self._write(simple / "index.html", self.renderer.render("simple_root", **context))
        self._write(simple / "index.json", to_json(context))
        self._write(self.output / "packages.json",
                    to_json([[name, described[name]] for name in packages]))
        self._write(self.output / "sitemap.xml", self.renderer.render(
            "sitemap", packages=packages, base_url=self.site.index_url.rsplit("simple", 1)[0]))
        self.root_dirty = False

    def write_home(self) -> None:
        stats = self.db.statistics()
        self._write(self.output / "index.html", self.renderer.render(
            "home", root="", stats=stats,
            updated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
        self.home_dirty = False

    def write_static(self) -> None:
        self._write(self.output / "static" / "style.css",
                    (templates_dir() / "style.css").read_bytes())

    def status(self) -> dict:
        return {"dirty": len(self.dirty), "root_pending": self.root_dirty,
                "pages_written": self.pages_written}
