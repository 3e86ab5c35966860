"""index_writer: keeps the static output tree in step with the database.

Requests name a package (or the home page, or everything).  Each package is
rewritten from the database alone: its simple pages (HTML and JSON), its
project page and JSON, its build logs, its alias links, and the removal of
files the database no longer lists.  A request that finds the writer idle is
written at once; the ones that follow within ``coalesce_s`` are written
together.  Every write goes through a temp file and a rename, and a page whose
bytes did not change is left alone.  The simple root, packages.json and the
sitemap are rewritten only when the set of published projects changes, and at
most every ``root_interval_s``.

A write the file system refuses (a full disk, say) fails only that project:
nothing half-written stays (temp file, then rename), the reason is logged
(rate-limited), and the project is written again every ``retry_s`` until it
succeeds.  The root and home pages stay due until they are written.

A long backlog (a full rewrite) is shared among worker processes, each with
its own database connection; a package is never written by two at once.
"""

from __future__ import annotations

import gzip
import logging
import json
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import zmq

from ..db import Database
from ..errors import InvalidName
from ..failures_page import failures_context
from ..index_pages import (
    Renderer, Site, project_context, published_files, served_files,
    simple_project_context, simple_root_context, to_json,
)
from ..names import canonical_name
from ..protocols import INDEX_REQUESTS
from ..records import ProjectData
from ..resources import templates_dir
from ..storage import METADATA_SUFFIX, PAGE_FILES, OutputTree, atomic_write, remove_quietly
from .db_task import DatabaseTask
from .task import Clock

#: The longest one run of page writing in the task's own thread lasts.
SLICE_S = 0.5
#: How many projects are read from the database together.
BATCH_SIZE = 100
#: A backlog this long (a full rewrite) is shared among worker processes...
PARALLEL_BACKLOG = 2000
#: ... in batches of this many projects, at most this many batches per worker queued.
WORKER_BATCH_SIZE = 500
WORKER_QUEUE = 2
#: The simple root lists every project (a second's work at 100k): rewritten at most this
#: often, however many new projects arrive.
ROOT_INTERVAL_S = 5.0
#: A wheel no page ever listed is removed once it is this old (a crash left it behind).
ORPHAN_AGE_S = 3600.0
#: How often the projects whose writes the file system refused are written again.
RETRY_S = 10.0


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


@dataclass
class Written:
    """What writing a batch of projects did."""

    published: dict[str, bool] = field(default_factory=dict)  # has files on its page
    pages: int = 0
    #: projects not (wholly) written, and why: a refused write (a full disk, say)
    failed: dict[str, str] = field(default_factory=dict)


class PageWriter:
    """Writes projects' files into the output tree: used by the task itself and by
    each of its worker processes (every one with its own database connection)."""

    def __init__(self, db: Database, output: Path, site: Site) -> None:
        self.db = db
        self.tree = OutputTree(output)
        self.site = site
        self.renderer = Renderer(site)

    def write(self, path: str | Path, data: bytes, written: Written,
              old: Optional[bytes] = None) -> None:
        if write_if_changed(path, data, old):
            written.pages += 1

    def write_packages(self, packages: Sequence[str]) -> Written:
        """Rewrite these projects' pages, logs and links from one read of the database."""
        written = Written()
        packages = [canonical_name(package) for package in packages]
        projects = self.db.get_projects(packages)
        abis = self.db.get_build_abis()
        build_ids: dict[int, str] = {}
        for package in packages:
            project = projects.get(package)
            try:
                if project is None:
                    self._remove_project(package)
                    written.published[package] = False
                else:
                    written.published[package] = self._write_project(project, abis, written)
                    build_ids.update((b.build_id, package)
                                     for v in project.versions for b in v.builds)
            except OSError as exc:
                written.failed[package] = str(exc)
        for build_id, reason in self._write_logs(list(build_ids)).items():
            written.failed.setdefault(build_ids[build_id], reason)
        return written

    def _remove_project(self, package: str) -> None:
        self.tree.remove_project(package)
        self._remove_aliases(package)

    def _write_project(self, project: ProjectData, abis: list[str], written: Written) -> bool:
        package = project.package
        simple_dir = self.tree.simple_dir(package)
        project_dir = self.tree.project_dir(package)
        recorded = published_files(project)
        files = served_files(project)
        filenames = [f.filename for _, f in recorded]
        if project.status.withheld:
            self.tree.withhold(package, filenames)
        else:
            self.tree.restore(package, filenames)
        simple_json = simple_dir / "index.json"
        page_before = read_if_exists(simple_json)
        if recorded:
            # (a quarantined project's page says so, and lists nothing)
            simple = simple_project_context(project, self.site, files)
            self.write(simple_dir / "index.html",
                       self.renderer.render("simple_project", **simple,
                                            project_status=simple["project-status"]), written)
            self.write(simple_json, to_json(simple), written, page_before)
        else:
            # no wheel at all: no simple page (a 404), so no client is sent here
            for name in PAGE_FILES:
                remove_quietly(simple_dir / name)
        self._prune(simple_dir, {f.filename for _, f in files}, listed_files(page_before))
        context = project_context(project, abis, self.site)
        self.write(self.tree.project_json(package), to_json(context), written)
        self.write(project_dir / "index.html", self.renderer.render(
            "project", format_size=format_size, **context), written)
        self._write_aliases(package, project.names)
        return bool(files)  # in the root: a project whose wheels are served

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


# --- worker processes (a full rewrite) --------------------------------------------------
# Each worker process keeps its own PageWriter, made once by the pool's initializer.

_worker_pages: Optional[PageWriter] = None


def _start_worker(dsn: str, output: str, site: Site) -> None:
    global _worker_pages
    _worker_pages = PageWriter(Database(dsn), Path(output), site)


def _worker_write(packages: list[str]) -> Written:
    return _worker_pages.write_packages(packages)


class IndexWriter(DatabaseTask):
    name = "index_writer"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path, site: Site,
                 coalesce_s: float = 0.5, home_interval_s: float = 60.0,
                 root_interval_s: float = ROOT_INTERVAL_S,
                 workers: Optional[int] = None, parallel_backlog: int = PARALLEL_BACKLOG,
                 worker_batch_size: int = WORKER_BATCH_SIZE, retry_s: float = RETRY_S,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.tree = OutputTree(output_path)
        self.site = site
        self.coalesce_s = coalesce_s
        self.root_interval_s = root_interval_s
        #: worker processes for a full rewrite (0: write everything in this thread)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.parallel_backlog = parallel_backlog
        self.worker_batch_size = worker_batch_size
        self.pages: Optional[PageWriter] = None
        self.pool: Optional[ProcessPoolExecutor] = None
        self.in_flight: dict[Future, list[str]] = {}
        self.busy: set[str] = set()  # packages a worker is writing now
        self.dirty: dict[str, None] = {}  # insertion-ordered set
        self.failed: dict[str, None] = {}  # refused by the file system: written again later
        self.static_dirty = True
        self.root: Optional[set[str]] = None
        self.root_dirty = True
        self.home_dirty = True
        self.failures_dirty = True
        self.last_failures = float("-inf")
        self.pages_written = 0
        self.batches_shared = 0  # batches handed to worker processes
        self.last_write = float("-inf")  # when packages were last written in this thread
        self.last_root = float("-inf")
        self.requests = self.socket(zmq.PULL, INDEX_REQUESTS.reverse())
        self.requests.bind(INDEX_REQUESTS.address)
        self.register(self.requests, self.handle_request)
        self.every(coalesce_s, self.flush)
        self.every(home_interval_s, self.want_home)
        self.retry_s = retry_s
        self.every(retry_s, self.retry_failed)

    def on_start(self) -> None:
        self.pages = PageWriter(self.db, self.tree.root, self.site)
        self.write_static()

    def on_stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

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
                return
            self.failures_dirty = True  # an attempt was recorded, or a release changed
            if self.clock() - self.last_write >= self.coalesce_s:
                self.flush()  # quiet until now: no burst to wait for
        elif name == "HOME":
            self.home_dirty = True
        elif name == "ROOT":
            # an operator's request: written at the next flush, whatever the interval
            self.root_dirty, self.last_root = True, float("-inf")
        else:
            self.rewrite_all()

    def want_home(self) -> None:
        self.home_dirty = self.failures_dirty = True

    def retry_failed(self) -> None:
        """Write again what the file system refused (space may have come back)."""
        if self.static_dirty:
            self.write_static()
        for package in self.failed:
            self.dirty[package] = None
        self.failed.clear()

    def refused(self, what: str, reason: str) -> None:
        self.log_limited("write refused", logging.WARNING,
                         "could not write %s (%s); tried again every %g s",
                         what, reason, self.retry_s)

    # --- writing ----------------------------------------------------------------

    def flush(self) -> None:
        self._collect()
        if self.pool is not None or (self.workers and len(self.dirty) >= self.parallel_backlog):
            self._share_out()
        else:
            deadline = self.clock() + SLICE_S
            while self.dirty and self.clock() < deadline:
                batch = self._take(BATCH_SIZE)
                if not batch:
                    break  # all that is left is being written by a worker
                self._apply(self.pages.write_packages(batch))
                self.last_write = self.clock()
        if not self.dirty and not self.in_flight:
            try:
                if self.root_dirty and self.clock() - self.last_root >= self.root_interval_s:
                    self.write_root()
                if self.home_dirty:
                    self.write_home()
                if self.failures_dirty and \
                        self.clock() - self.last_failures >= self.root_interval_s:
                    self.write_failures()
            except OSError as exc:
                # still due: written at a later flush
                self.last_root = self.last_failures = self.clock()
                self.refused("the root, home or failures pages", str(exc))

    def rewrite_all(self) -> None:
        """Queue every package for rewriting, plus the root and home pages."""
        for package in self.db.all_packages():
            self.dirty[package] = None
        self.root_dirty = self.home_dirty = self.failures_dirty = True
        self.root = None

    def write_package(self, package: str) -> None:
        """Rewrite one package's files now, in this thread."""
        self._apply(self.pages.write_packages([package]))

    def _take(self, count: int) -> list[str]:
        """Up to *count* dirty packages, oldest request first, none a worker has now."""
        batch = []
        for package in self.dirty:
            if package not in self.busy:
                batch.append(package)
                if len(batch) == count:
                    break
        for package in batch:
            del self.dirty[package]
        return batch

    def _apply(self, written: Written) -> None:
        self.pages_written += written.pages
        for package, published in written.published.items():
            self._root_membership(package, published)
        for package, reason in written.failed.items():
            self.failed[package] = None
            self.refused(f"the pages of {package}", reason)

    def _share_out(self) -> None:
        if self.pool is None:
            self.log.info("sharing %d packages among %d worker processes",
                          len(self.dirty), self.workers)
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.dsn, str(self.tree.root), self.site))
        while len(self.in_flight) < self.workers * WORKER_QUEUE:
            batch = self._take(self.worker_batch_size)
            if not batch:
                break
            self.in_flight[self.pool.submit(_worker_write, batch)] = batch
            self.busy.update(batch)
            self.batches_shared += 1
        if not self.in_flight:
            self.pool.shutdown(wait=True)  # the backlog is done; free the connections
            self.pool = None

    def _collect(self) -> None:
        """Take in what the workers finished (a worker's failure fails the task)."""
        for future in [f for f in self.in_flight if f.done()]:
            batch = self.in_flight.pop(future)
            self.busy.difference_update(batch)
            self._apply(future.result())

    def _root_membership(self, package: str, published: bool) -> None:
        if self.root is None:
            return  # the next root write reads the whole list anyway
        if published and package not in self.root:
            self.root.add(package)
            self.root_dirty = True
        elif not published and package in self.root:
            self.root.discard(package)
            self.root_dirty = True

    def _write(self, path: Path, data: bytes) -> None:
        written = Written()
        self.pages.write(path, data, written)
        self.pages_written += written.pages

    def write_root(self) -> None:
        """The simple root, packages.json (name and description, for search) and sitemap."""
        described = self.db.packages_with_files()
        self.root = set(described)
        packages = sorted(described)
        context = simple_root_context(packages)
        renderer = self.pages.renderer
        self._write(self.tree.simple_page("html"), renderer.render("simple_root", **context))
        self._write(self.tree.simple_page("json"), to_json(context))
        self._write(self.tree.packages_json,
                    to_json([[name, described[name]] for name in packages]))
        self._write(self.tree.sitemap, renderer.render(
            "sitemap", packages=packages, base_url=self.site.index_url.rsplit("simple", 1)[0]))
        self.root_dirty = False
        self.last_root = self.clock()

    def write_home(self) -> None:
        stats = self.db.statistics()
        self._write(self.tree.home_page, self.pages.renderer.render(
            "home", root="", stats=stats,
            updated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
        self.home_dirty = False

    def write_failures(self) -> None:
        """The farm-wide failures page and its JSON twin (at most every root interval:
        it reads every unbuilt failure; see :mod:`piwheels.failures_page`)."""
        context = failures_context(self.db.unbuilt_failures())
        # no time stamp: a page that did not change is not written again
        self._write(self.tree.failures_page("html"), self.pages.renderer.render(
            "failures", **context))
        self._write(self.tree.failures_page("json"), to_json(context))
        self.failures_dirty = False
        self.last_failures = self.clock()

    def write_static(self) -> None:
        try:
            self._write(self.tree.style_sheet,
                        (templates_dir() / "style.css").read_bytes())
            self.static_dirty = False
        except OSError as exc:
            self.refused("the style sheet", str(exc))

    def status(self) -> dict:
        # "dirty" counts what is still to write, a worker's share included
        return {"dirty": len(self.dirty) + len(self.busy), "in_flight": len(self.busy),
                "root_pending": self.root_dirty, "home_pending": self.home_dirty,
                "pages_written": self.pages_written, "write_failed": len(self.failed)}
