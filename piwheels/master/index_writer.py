"""index_writer: keeps the static output tree in step with the database.

Requests name a package (or the home page, or everything); every request
waiting is taken at once, so many builds of one project make one write.  A
request that finds the writer idle is written at once; the ones that follow
within ``coalesce_s`` are written together, projects read from the database in
batches (see :mod:`piwheels.page_writer` for what a project's write is).  The
task keeps each project's :class:`~piwheels.page_writer.Fingerprint` in memory:
a project whose pages did not change is neither rendered nor read back.

The pages that sum up the whole index (the simple root, packages.json and the
sitemap, the home page, the failures page) are rewritten at most every
``summary_interval_s`` (``--summary-interval``), however many builds arrive,
and whatever backlog there is.

A write the file system refuses (a full disk, say) fails only that project:
nothing half-written stays (temp file, then rename), the reason is logged
(rate-limited), and the project is written again every ``retry_s`` until it
succeeds.  The summary pages stay due until they are written.  A worker
process that loses the database, or dies, fails only its batch the same way:
the master's own tasks decide whether the database is gone for good.

A backlog longer than one slice of the task's time clears (a burst of builds,
a full rewrite) is shared among worker processes, each with its own database
connection; a package is never written by two at once.  What changed is
always handed out before the rest of a full rewrite, so a rewrite never holds
up a build's pages.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Optional

import zmq

from ..db import Database
from ..errors import DatabaseUnavailable, InvalidName
from ..index_pages import Site, simple_root_context, to_json
from ..names import canonical_name
from ..page_writer import Fingerprint, PageWriter, Written
from ..protocols import INDEX_REQUESTS
from ..resources import templates_dir
from ..storage import OutputTree
from ..transport import ProtocolError
from .db_task import DatabaseTask
from .task import Clock

#: Requests that arrive within this long of a write are written together.
COALESCE_S = 0.2
#: The longest one run of page writing in the task's own thread lasts.
SLICE_S = 0.5
#: How many projects are read from the database together (one query each).
BATCH_SIZE = 100
#: A backlog this long (more than a slice clears: a burst of builds, a full
#: rewrite) is shared among worker processes, which stay until idle this long...
PARALLEL_BACKLOG = 500
POOL_IDLE_S = 30.0
#: ... a full rewrite in batches of this many projects, at most this many batches
#: per worker queued (what changed meanwhile goes in batches of BATCH_SIZE).
WORKER_BATCH_SIZE = 250
WORKER_QUEUE = 2
#: The most requests taken in one go (the loop's timers still run between).
MAX_DRAIN = 10_000
#: How often the projects whose writes the file system refused are written again.
RETRY_S = 10.0


# --- worker processes (a full rewrite) --------------------------------------------------
# Each worker process keeps its own PageWriter, made by the pool's initializer (or,
# if the database did not answer then, by the first call that finds it answering).

_worker_pages: Optional[PageWriter] = None
_worker_args: tuple = ()


def _start_worker(dsn: str, output: str, site: Site) -> None:
    """Keep what the worker's PageWriter is made from, and make it if the database
    answers (if not, each call tries again: an initializer that raised would
    break the whole pool)."""
    global _worker_args
    _worker_args = dsn, output, site
    try:
        _worker_page_writer()
    except DatabaseUnavailable:
        pass


def _worker_page_writer() -> PageWriter:
    global _worker_pages
    if _worker_pages is None:
        dsn, output, site = _worker_args
        _worker_pages = PageWriter(Database(dsn), Path(output), site)
    return _worker_pages


def _worker_write(packages: list[str], fingerprints: dict[str, Fingerprint]) -> Written:
    return _worker_page_writer().write_packages(packages, fingerprints)


#: The summary pages whose queries take seconds on a large farm, and what writes each.
SLOW_SUMMARIES = {"home": PageWriter.write_home, "failures": PageWriter.write_failures}


def _worker_summary(page: str) -> Written:
    return SLOW_SUMMARIES[page](_worker_page_writer())


class IndexWriter(DatabaseTask):
    name = "index_writer"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path, site: Site,
                 summary_interval_s: float, coalesce_s: float = COALESCE_S,
                 home_interval_s: float = 60.0,
                 workers: Optional[int] = None, parallel_backlog: int = PARALLEL_BACKLOG,
                 worker_batch_size: int = WORKER_BATCH_SIZE, retry_s: float = RETRY_S,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.tree = OutputTree(output_path)
        self.site = site
        self.coalesce_s = coalesce_s
        #: the simple root, home and failures pages are rewritten at most this often
        self.summary_interval_s = summary_interval_s
        #: worker processes for a long backlog (0: write everything in this thread)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.parallel_backlog = parallel_backlog
        self.worker_batch_size = worker_batch_size
        self.pages: Optional[PageWriter] = None
        self.pool: Optional[ProcessPoolExecutor] = None
        self.pool_idle_since = float("inf")
        self.in_flight: dict[Future, tuple[list[str], bool]] = {}  # batch, part of a rewrite
        #: the slow summary pages' own worker process, and the writes it is doing now
        self.summary_pool: Optional[ProcessPoolExecutor] = None
        self.summary_writes: dict[str, Future] = {}
        self.busy: set[str] = set()  # packages a worker is writing now
        #: insertion-ordered sets: what changed (written first), and a full rewrite's rest
        self.dirty: dict[str, None] = {}
        self.backlog: dict[str, None] = {}
        self.failed: dict[str, None] = {}  # refused by the file system: written again later
        #: what each project's files were last written from (see :class:`Fingerprint`)
        self.fingerprints: dict[str, Fingerprint] = {}
        #: projects an operator asked to rewrite: their next write ignores their
        #: fingerprints and compares with the disk
        self.rewrites: set[str] = set()
        self.static_dirty = True
        self.root: Optional[set[str]] = None
        self.root_dirty = True
        self.home_dirty = True
        self.failures_dirty = True
        self.pages_written = 0
        self.projects_unchanged = 0  # flushed, found unchanged, nothing rendered
        self.batches_shared = 0  # batches handed to worker processes
        self.last_write = float("-inf")  # when packages were last written in this thread
        self.last_root = self.last_home = self.last_failures = float("-inf")
        self.requests = self.socket(zmq.PULL, INDEX_REQUESTS.reverse())
        self.requests.bind(INDEX_REQUESTS.address)
        self.register(self.requests, self.handle_requests)
        self.every(coalesce_s, self.flush)
        self.every(home_interval_s, self.want_home)
        self.retry_s = retry_s
        self.every(retry_s, self.retry_failed)

    def on_start(self) -> None:
        self.pages = PageWriter(self.db, self.tree.root, self.site)
        self.write_static()

    def on_stop(self) -> None:
        self._stop_pool(cancel=True)
        if self.summary_pool is not None:
            self.summary_pool.shutdown(wait=True, cancel_futures=True)

    def handle_requests(self) -> None:
        """Take every request waiting (many builds of one project: one write)."""
        package_requested = False
        for _ in range(MAX_DRAIN):
            try:
                name, payload = self.requests.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            except ProtocolError as exc:
                self.log.error("dropped a bad %s message: %s", self.requests.protocol.name, exc)
                continue
            if name in ("PACKAGE", "REWRITE"):
                try:
                    package = canonical_name(payload["package"])
                except InvalidName as exc:
                    self.log.error("dropped a page request: %s", exc)
                    continue
                self.dirty[package] = None
                if name == "REWRITE":
                    self.rewrites.add(package)
                package_requested = True
            elif name == "HOME":
                self.home_dirty = True
            elif name == "ROOT":
                # an operator's request: written at the next flush, whatever the interval
                self.root_dirty, self.last_root = True, float("-inf")
            else:
                self.rewrite_all()
        if package_requested:
            self.failures_dirty = True  # an attempt was recorded, or a release changed
            if self.clock() - self.last_write >= self.coalesce_s:
                self.flush()  # quiet until now: no burst to wait for

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
        waiting = len(self.dirty) + len(self.backlog)
        if self.pool is None and self.workers and waiting >= self.parallel_backlog:
            self._start_pool(waiting)
        if self.pool is not None:
            self._share_out()
        else:
            deadline = self.clock() + SLICE_S
            while self.clock() < deadline:
                batch, _ = self._take(BATCH_SIZE)
                if not batch:
                    break
                self._apply(self.pages.write_packages(batch, self._fingerprints_of(batch)))
                self.last_write = self.clock()
        self.write_summaries()

    def write_summaries(self) -> None:
        """The pages that sum up the whole index, each at most every summary interval,
        however many builds arrive (and whatever the backlog)."""
        now = self.clock()
        try:
            if self.root_dirty and now - self.last_root >= self.summary_interval_s:
                self.write_root()
            if self.home_dirty and now - self.last_home >= self.summary_interval_s:
                self.write_home()
            if self.failures_dirty and now - self.last_failures >= self.summary_interval_s:
                self.write_failures()
        except OSError as exc:
            # still due: written at a later flush
            self.last_root = self.last_home = self.last_failures = self.clock()
            self.refused("the root, home or failures pages", str(exc))

    def rewrite_all(self) -> None:
        """Queue every package for rewriting, plus the root and home pages.

        The fingerprints are forgotten, so every page is compared with the disk
        (an operator's rebuild repairs what was changed there behind the writer's
        back); what changes meanwhile is still written first.
        """
        for package in self.db.all_packages():
            if package not in self.dirty:
                self.backlog[package] = None
        self.fingerprints.clear()
        self.root_dirty = self.home_dirty = self.failures_dirty = True
        self.last_root = self.last_home = self.last_failures = float("-inf")
        self.root = None

    def _fingerprints_of(self, batch: list[str]) -> dict[str, Fingerprint]:
        """The fingerprints *batch* is written with (none for a project an operator
        asked to rewrite: it is compared with the disk)."""
        fingerprints = {p: self.fingerprints[p] for p in batch
                        if p in self.fingerprints and p not in self.rewrites}
        self.rewrites.difference_update(batch)
        return fingerprints

    def _take(self, count: int) -> tuple[list[str], bool]:
        """Up to *count* packages, none a worker has now: what changed first, oldest
        request first, else the full rewrite's; and whether they are the rewrite's."""
        for queue, rewrite in ((self.dirty, False), (self.backlog, True)):
            batch = []
            for package in queue:
                if package not in self.busy:
                    batch.append(package)
                    if len(batch) == count:
                        break
            if batch:
                for package in batch:
                    del queue[package]
                    self.backlog.pop(package, None)
                return batch, rewrite
        return [], False

    def _apply(self, written: Written) -> None:
        self.pages_written += written.pages
        self.projects_unchanged += written.unchanged
        for package, fingerprint in written.fingerprints.items():
            if fingerprint is None:
                self.fingerprints.pop(package, None)
            else:
                self.fingerprints[package] = fingerprint
        for package, published in written.published.items():
            self._root_membership(package, published)
        for package, reason in written.failed.items():
            self.fingerprints.pop(package, None)
            self.failed[package] = None
            self.refused(f"the pages of {package}", reason)

    def _start_pool(self, waiting: int) -> None:
        self.log.info("sharing %d packages among %d worker processes", waiting, self.workers)
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(self.dsn, str(self.tree.root), self.site))
        self.pool_idle_since = float("inf")

    def _stop_pool(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None

    def _share_out(self) -> None:
        """Keep every worker busy: a batch of what changed may always join one
        rewrite batch per worker, so a full rewrite never holds up a build's pages."""
        rewriting = sum(1 for _, rewrite in self.in_flight.values() if rewrite)
        while len(self.in_flight) < self.workers * WORKER_QUEUE:
            size = BATCH_SIZE if self.dirty else self.worker_batch_size
            if not self.dirty and rewriting >= self.workers:
                break
            batch, rewrite = self._take(size)
            if not batch:
                break
            try:
                future = self.pool.submit(_worker_write, batch, self._fingerprints_of(batch))
            except BrokenProcessPool:  # a worker died while idle: the batch waits for a new pool
                self.failed.update(dict.fromkeys(batch))
                self.refused(f"{len(batch)} projects' pages", "a worker process died")
                self._drop_broken_pool()
                return
            self.in_flight[future] = batch, rewrite
            rewriting += rewrite
            self.busy.update(batch)
            self.batches_shared += 1
        if self.in_flight or self.dirty or self.backlog:
            self.pool_idle_since = float("inf")
        elif self.pool_idle_since == float("inf"):
            self.pool_idle_since = self.clock()
        elif self.clock() - self.pool_idle_since >= POOL_IDLE_S:
            self._stop_pool()  # the backlog is done; free the connections

    def _collect(self) -> None:
        """Take in what the workers finished.  A batch whose worker lost the
        database or died is written again later; any other failure (a bug)
        fails the task."""
        self._collect_summaries()
        broken = False
        for future in [f for f in self.in_flight if f.done()]:
            batch, _ = self.in_flight.pop(future)
            self.busy.difference_update(batch)
            try:
                self._apply(future.result())
            except (DatabaseUnavailable, BrokenProcessPool) as exc:
                broken |= isinstance(exc, BrokenProcessPool)
                self.failed.update(dict.fromkeys(batch))
                self.refused(f"{len(batch)} projects' pages", str(exc) if isinstance(
                    exc, DatabaseUnavailable) else "a worker process died")
        if broken:
            self._drop_broken_pool()

    def _drop_broken_pool(self) -> None:
        """Forget a pool one of whose processes died; a new one is started for what is left."""
        for batch, _ in self.in_flight.values():
            self.failed.update(dict.fromkeys(batch))
        self.busy.clear()
        self.in_flight.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None

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
        if self._write_slow_summary("home"):
            self.home_dirty = False
            self.last_home = self.clock()

    def write_failures(self) -> None:
        if self._write_slow_summary("failures"):
            self.failures_dirty = False
            self.last_failures = self.clock()

    def _write_slow_summary(self, page: str) -> bool:
        """Write the home or failures page, or have it written; False if its last write
        is still going on (it is due again once that is taken in).

        Their queries read the whole farm (every unbuilt failure; counts over
        every build): on a catalogue the size of the upstream index that takes
        many seconds, in which this thread would take no requests and the
        tasks sending them would drop theirs.  So where there are worker
        processes, one of their own writes them, one write of each at a time;
        what changes meanwhile makes the page due again.
        """
        if not self.workers:
            self.pages_written += SLOW_SUMMARIES[page](self.pages).pages
            return True
        if page in self.summary_writes:
            return False
        if self.summary_pool is None:
            self.summary_pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.dsn, str(self.tree.root), self.site))
        try:
            self.summary_writes[page] = self.summary_pool.submit(_worker_summary, page)
        except BrokenProcessPool:  # its process died while idle: due again, in a new one
            self._drop_summary_pool()
            self.refused(f"the {page} page", "its worker process died")
            return False
        return True

    def _collect_summaries(self) -> None:
        """Take in the slow summary pages' writes their process is done with."""
        for page, future in list(self.summary_writes.items()):
            if not future.done():
                continue
            del self.summary_writes[page]
            try:
                self.pages_written += future.result().pages
            except (OSError, DatabaseUnavailable, BrokenProcessPool) as exc:
                if page == "home":
                    self.home_dirty = True
                else:
                    self.failures_dirty = True
                if isinstance(exc, BrokenProcessPool):
                    self._drop_summary_pool()
                    self.refused(f"the {page} page", "its worker process died")
                else:
                    self.refused(f"the {page} page", str(exc))

    def _drop_summary_pool(self) -> None:
        if self.summary_pool is not None:
            self.summary_pool.shutdown(wait=False, cancel_futures=True)
            self.summary_pool = None

    def write_static(self) -> None:
        try:
            self._write(self.tree.style_sheet,
                        (templates_dir() / "style.css").read_bytes())
            self.static_dirty = False
        except OSError as exc:
            self.refused("the style sheet", str(exc))

    def status(self) -> dict:
        # "dirty" counts what is still to write, a worker's share included
        return {"dirty": len(self.dirty) + len(self.backlog) + len(self.busy),
                # what is left of a full rewrite (builds' pages keep "dirty" up meanwhile)
                "rewrite_pending": len(self.backlog) + sum(
                    len(batch) for batch, rewrite in self.in_flight.values() if rewrite),
                "in_flight": len(self.busy),
                "root_pending": self.root_dirty, "home_pending": self.home_dirty,
                "pages_written": self.pages_written,
                "projects_unchanged": self.projects_unchanged,
                "write_failed": len(self.failed)}
