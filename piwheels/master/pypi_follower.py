"""pypi_follower: keeps the database in step with the upstream index.

Two sources feed it.  The XML-RPC change feed, read page by page from the
stored serial, is applied event by event, each page in one transaction with
the serial it reaches.  The reconciler compares every project's
``_last-serial`` in the PEP 691 project list with the stored one and reads
the changed projects whole, deriving what was added, removed and yanked by
difference; it runs at start-up (catching up after downtime), on demand, on
a slow timer, and is the only source when the feed is off or failing.

Work is done in slices between timer ticks so the task keeps answering its
control socket, and nothing the upstream sends can crash it: a bad answer
is logged and tried again later with a growing back-off.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

import zmq

from ..allow_list import AllowList
from ..connection import first_line
from ..errors import DataRefused, InvalidName, InvalidVersion, UnknownPackage, UnknownVersion
from ..names import canonical_name, normal_version
from ..protocols import BUILD_QUEUE, FOLLOWER_COMMANDS, INDEX_REQUESTS, QUEUE_REQUESTS
from ..project_status import QUARANTINED
from ..pypi_client import (
    ChangelogEvent, PyPIClient, UpstreamError, UpstreamProject, is_unknown_status,
)
from .db_task import DatabaseTask
from .task import Clock

#: How long one slice of work may run before the task looks at its sockets.
SLICE_S = 0.5
#: The longest back-off after repeated upstream failures.
MAX_BACKOFF_S = 300.0
#: Failures of the change feed in a row before the reconciler takes over for a while.
FEED_FAILURES_BEFORE_RECONCILE = 3
#: How often the task wakes to see whether work is due.
TICK_S = 0.1
#: After the upstream refuses the change feed outright, how long before trying it again.
FEED_RETRY_S = 3600.0

ADD_FILE_PREFIX = "add "
SDIST_ACTION_PREFIX = "add source file "
RENAME_PREFIX = "rename from "
#: An event whose action names one of these (upstream's wording is its own) may
#: have changed the project's PEP 792 status: the project is read whole.  The
#: reconciler catches any other change by the project's serial.
STATUS_ACTION_WORDS = ("status", "quarantin", "archiv", "deprecat")


class PyPIFollower(DatabaseTask):
    name = "pypi_follower"

    def __init__(self, ctx: zmq.Context, *, dsn: str, client: PyPIClient, allow: AllowList,
                 poll_interval_s: float, reconcile_interval_s: float,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.client = client
        self.allow = allow
        self.poll_interval_s = poll_interval_s
        self.reconcile_interval_s = reconcile_interval_s
        self.feed_enabled = bool(client.xmlrpc_url)
        self.feed_retry_s = 0.0
        self.feed_failures = 0
        self.backoff_s = 0.0
        self.not_before_s = 0.0
        self.next_poll_s = 0.0
        self.next_reconcile_s = 0.0  # at start-up
        self.etag: Optional[str] = None
        # projects to read whole from the JSON API: canonical name -> display name
        self.to_read: OrderedDict[str, str] = OrderedDict()
        self.reconcile_serial: Optional[int] = None  # set while a reconcile is in progress
        self.reconcile_failed = False
        self._pending_etag: Optional[str] = None
        self.events_applied = 0
        #: additions of the page being applied, written in one go (see flush_releases)
        self.batching = True
        self.pending_releases: list = []
        self.pending_packages: set[str] = set()
        #: projects the page creates: {name as upstream gave it: canonical name}
        self.pending_creates: dict[str, str] = {}
        self.events_skipped = 0
        self.queue_requests = self.socket(zmq.PUSH, QUEUE_REQUESTS)
        self.queue_requests.connect(QUEUE_REQUESTS.address)
        self.index_requests = self.socket(zmq.PUSH, INDEX_REQUESTS)
        self.index_requests.connect(INDEX_REQUESTS.address)
        self.cancels = self.socket(zmq.PUSH, BUILD_QUEUE)
        self.cancels.connect(BUILD_QUEUE.address)
        self.commands = self.socket(zmq.PULL, FOLLOWER_COMMANDS.reverse())
        self.commands.bind(FOLLOWER_COMMANDS.address)
        self.register(self.commands, self.handle_command)
        self.every(TICK_S, self.tick)

    def on_start(self) -> None:
        self.log.info("following %s (%s)%s", self.client.simple_url,
                      "change feed and reconciler" if self.feed_enabled else "reconciler only",
                      "" if self.allow.everything else f", projects {list(self.allow.patterns)}")

    def on_stop(self) -> None:
        self.client.close()

    def handle_command(self) -> None:
        if self.recv_or_log(self.commands) is not None:  # RECONCILE
            self.log.info("reconciling on request")
            self.next_reconcile_s = 0.0

    # --- scheduling -------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        if self.paused or now < self.not_before_s:
            return
        if not self.feed_enabled and self.client.xmlrpc_url and now >= self.feed_retry_s:
            self.feed_enabled = True
        try:
            if self.to_read:
                self.read_projects()
            elif self.reconcile_serial is not None:
                self.finish_reconcile()
            elif now >= self.next_reconcile_s:
                self.start_reconcile()
            elif self.feed_enabled and now >= self.next_poll_s:
                self.follow_feed()
            self.backoff_s = 0.0
        except UpstreamError as exc:
            self.backoff_s = min(MAX_BACKOFF_S, max(exc.retry_after_s, self.backoff_s * 2 or 1.0))
            self.not_before_s = self.clock() + self.backoff_s
            self.log.warning("upstream: %s; trying again in %.0f s", exc, self.backoff_s)

    # --- the change feed ----------------------------------------------------------

    def follow_feed(self) -> None:
        serial = self.db.get_pypi_serial()
        try:
            events = self.client.changelog_since_serial(serial)
        except UpstreamError as exc:
            if exc.permanent:
                self.feed_enabled = False
                self.feed_retry_s = self.clock() + FEED_RETRY_S
                self.next_reconcile_s = 0.0
                self.log.warning("the change feed is refused (%s); following through the "
                                 "reconciler every %.0f s", exc, self.reconcile_interval_s)
                return
            self.feed_failures += 1
            if self.feed_failures >= FEED_FAILURES_BEFORE_RECONCILE:
                self.log.warning("the change feed keeps failing; reconciling instead")
                self.feed_failures = 0
                self.next_reconcile_s = 0.0
            raise
        self.feed_failures = 0
        if not events:
            self.next_poll_s = self.clock() + self.poll_interval_s
            return
        self.apply_events(events)
        # a full page means more is waiting: read on at the next tick

    def apply_events(self, events: list[ChangelogEvent]) -> None:
        """Apply one page of events and store the serial it reaches, all in one transaction."""
        touched: set[str] = set()
        cancelled: list[tuple[str, Optional[str]]] = []
        self.batching, self.pending_releases, self.pending_packages = True, [], set()
        self.pending_creates = {}
        try:
            with self.db.transaction():
                for event in events:
                    self.apply_event(event, touched, cancelled)
                self.flush_releases()
                self.db.set_pypi_serial(events[-1].serial)
        except DataRefused as exc:
            # something upstream sent does not fit the schema: apply the page again
            # event by event, leaving out the ones the database refuses
            self.log.warning("a change-feed page was refused (%s); applying it event by event",
                             exc.__class__.__name__)
            touched, cancelled = set(), []
            self.batching, self.pending_releases, self.pending_packages = False, [], set()
            self.pending_creates = {}
            with self.db.transaction():
                for event in events:
                    try:
                        with self.db.savepoint():
                            self.apply_event(event, touched, cancelled)
                    except DataRefused as exc:
                        self.events_skipped += 1
                        self.log.warning("ignored %r for %s: %s", event.action[:40],
                                         event.name, first_line(exc))
                self.db.set_pypi_serial(events[-1].serial)
        self.events_applied += len(events)
        self.announce(touched, cancelled)

    def apply_event(self, event: ChangelogEvent, touched: set[str],
                    cancelled: list[tuple[str, Optional[str]]]) -> None:
        try:
            package = canonical_name(event.name)
        except InvalidName as exc:
            self.log.warning("ignored event %r: %s", event.action[:80], exc)
            return
        if not self.allow.allows(package):
            return
        action = event.action
        db = self.db
        if package in self.pending_packages and not (
                action in ("create", "new release") or action.startswith(ADD_FILE_PREFIX)):
            self.flush_releases()
        try:
            if action == "create":
                if self.batching:
                    # written with the page's other additions, in one statement
                    self.pending_creates[event.name] = package
                    self.pending_packages.add(package)
                elif db.add_package(event.name):
                    self.read_later(package, event.name)  # for its description
            elif action == "new release" or action.startswith(ADD_FILE_PREFIX):
                if event.version is None:
                    return
                release = (event.name, normal_version(event.version),
                           _timestamp(event.timestamp), action.startswith(SDIST_ACTION_PREFIX))
                if self.batching:
                    # additions are written together, before anything else about the package
                    self.pending_releases.append(release)
                    self.pending_packages.add(package)
                else:
                    db.add_releases([release])
                if action.startswith(ADD_FILE_PREFIX):
                    # the event gives no digest or Requires-Python: the project page does
                    self.read_later(package, event.name)
            elif action.startswith("remove file "):
                self.read_later(package, event.name)
            elif action == "remove release":
                if event.version is not None and db.remove_version(package, event.version):
                    cancelled.append((package, normal_version(event.version)))
            elif action == "remove project":
                if db.remove_package(package):
                    cancelled.append((package, None))
            elif action == "yank release":
                if event.version is not None:
                    db.yank_version(package, event.version)
                    cancelled.append((package, normal_version(event.version)))
                    self.read_later(package, event.name)  # for the reason
            elif action == "unyank release":
                if event.version is not None:
                    db.unyank_version(package, event.version)
            elif action.startswith(RENAME_PREFIX):
                old = action[len(RENAME_PREFIX):].strip()
                try:
                    old_package = canonical_name(old)
                except InvalidName:
                    old_package = None
                if old_package and old_package != package and db.remove_package(old_package):
                    cancelled.append((old_package, None))
                    touched.add(old_package)
                db.add_package(event.name)
                self.read_later(package, event.name)
            elif any(word in action.lower() for word in STATUS_ACTION_WORDS):
                self.read_later(package, event.name)  # its PEP 792 status changed
            else:
                return  # owners, descriptions, …: nothing a build farm needs
        except (InvalidVersion, InvalidName) as exc:
            self.log.warning("ignored %s event for %s: %s", action[:40], event.name, exc)
            return
        except (UnknownPackage, UnknownVersion):
            # an event about something this farm never saw: read the project whole
            self.read_later(package, event.name)
            return
        touched.add(package)

    def flush_releases(self) -> None:
        """Write the additions gathered so far (the page's order is kept per package):
        new projects first (each new one is read whole later, for its description),
        then releases."""
        if self.pending_creates:
            display: dict[str, str] = {}
            for name, package in self.pending_creates.items():
                display.setdefault(package, name)
            for package in sorted(self.db.add_packages(self.pending_creates)):
                self.read_later(package, display[package])
        if self.pending_releases:
            self.db.add_releases(self.pending_releases)
        self.pending_releases, self.pending_packages, self.pending_creates = [], set(), {}

    # --- the reconciler ---------------------------------------------------------

    def start_reconcile(self) -> None:
        self.next_reconcile_s = self.clock() + self.reconcile_interval_s
        if self.allow.names is not None:
            self.reconcile_named(self.allow.names)
            return
        answer = self.client.project_serials(self.etag)
        if answer is None:
            self.log.debug("reconcile: the project list has not changed")
            return
        etag, serial, upstream = answer
        stored = self.db.package_serials()
        changed = 0
        for package, (display, project_serial) in upstream.items():
            if self.allow.allows(package) and project_serial > stored.get(package, -1):
                self.read_later(package, display)
                changed += 1
        gone = [p for p in stored if p not in upstream and self.allow.allows(p)]
        if gone:
            cancelled = []
            with self.db.transaction():
                for package in gone:
                    if self.db.remove_package(package):
                        cancelled.append((package, None))
            self.announce(set(gone), cancelled)
        self.log.info("reconcile at serial %d: %d project(s) changed, %d gone",
                      serial, changed, len(gone))
        self.reconcile_serial = serial
        self.reconcile_failed = False
        self._pending_etag = etag

    def reconcile_named(self, names: tuple[str, ...]) -> None:
        """A farm for a few named projects reads just those, never the whole upstream
        list (tens of MB, which some indexes serve only as HTML, without serials)."""
        for package in names:
            self.read_later(package, package)
        self.log.info("reconcile: reading the %d named project(s)", len(names))
        self.reconcile_serial = self.db.get_pypi_serial()
        self.reconcile_failed = False
        self._pending_etag = self.etag

    def finish_reconcile(self) -> None:
        serial, self.reconcile_serial = self.reconcile_serial, None
        if self.reconcile_failed:
            self.next_reconcile_s = min(self.next_reconcile_s, self.clock() + 60)
            return
        self.db.set_pypi_serial(serial)
        self.etag = self._pending_etag
        self.log.info("reconciled up to serial %d", serial)

    def read_later(self, package: str, display: str) -> None:
        self.to_read[package] = display

    def read_projects(self) -> None:
        """Read queued projects whole, for up to one slice of time."""
        deadline = self.clock() + SLICE_S
        while self.to_read and self.clock() < deadline:
            package, display = next(iter(self.to_read.items()))
            try:
                project = self.client.project(display)
            except UpstreamError:
                self.reconcile_failed = True
                raise
            del self.to_read[package]
            if project is not None and not self._valid_project(project, package):
                continue
            self.apply_project(package, project)

    def _valid_project(self, project: UpstreamProject, package: str) -> bool:
        try:
            if canonical_name(project.name) != package:
                raise InvalidName(f"{project.name} is not {package}")
        except InvalidName as exc:
            self.log.warning("ignored the upstream answer for %s: %s", package, exc)
            return False
        return True

    def apply_project(self, package: str, project: Optional[UpstreamProject]) -> None:
        """Make the database hold what upstream has for one project."""
        cancelled: list[tuple[str, Optional[str]]] = []
        with self.db.transaction():
            if project is None:
                if self.db.remove_package(package):
                    cancelled.append((package, None))
            else:
                self._sync_project(package, project, cancelled)
        self.announce({package}, cancelled)

    def _sync_project(self, package: str, project: UpstreamProject,
                      cancelled: list[tuple[str, Optional[str]]]) -> None:
        db = self.db
        db.add_package(project.name, description=project.summary)
        if project.summary:
            db.set_description(package, project.summary)
        self._sync_status(package, project, cancelled)
        if project.releases is None:
            # quarantined upstream, which lists nothing now: keep every release
            # (the farm withholds their files) so that lifting it brings them back
            db.set_package_serial(package, project.last_serial)
            return
        stored = db.get_versions(package)
        upstream = {}
        for raw, release in project.releases.items():
            try:
                upstream[normal_version(raw)] = release
            except InvalidVersion as exc:
                self.log.warning("ignored a release of %s: %s", package, exc)
        for version, release in upstream.items():
            have = stored.get(version)
            if have is None:
                db.add_version(package, version, released=release.released,
                               has_sdist=release.has_sdist, yanked=release.yanked,
                               yank_reason=release.yank_reason)
                continue
            if have["has_sdist"] != release.has_sdist:
                db.set_has_sdist(package, version, release.has_sdist)
                if not release.has_sdist:
                    # its source is gone upstream: so are the wheels built from it
                    db.remove_builds(package, version)
                    cancelled.append((package, version))
            if release.yanked and (not have["yanked"] or have["yank_reason"] != release.yank_reason):
                db.yank_version(package, version, release.yank_reason)
                cancelled.append((package, version))
            elif not release.yanked and have["yanked"]:
                db.unyank_version(package, version)
        for version in stored.keys() - upstream.keys():
            db.remove_version(package, version)
            cancelled.append((package, version))
        self._sync_upstream_files(package, upstream, stored)
        db.set_package_serial(package, project.last_serial)

    def _sync_upstream_files(self, package: str, upstream: dict, stored: dict) -> None:
        """Record each release's Requires-Python and upstream wheels where they changed;
        withdraw what the farm published under a name upstream serves with other bytes."""
        files = self.db.upstream_files_of(package)
        for version, release in upstream.items():
            if release.wheels is None:
                continue  # upstream's page was not read: keep what is known
            have = stored.get(version, {}).get("requires_python")
            if have == release.requires_python and files.get(version, {}) == dict(release.wheels):
                continue
            for gone in self.db.set_upstream_files(package, version, release.requires_python,
                                                   release.wheels):
                self.log.warning(
                    "withdrew %s (%s %s for %s): upstream now serves that name with other "
                    "bytes", gone.filename, gone.package, gone.version, gone.abi_tag)

    def _sync_status(self, package: str, project: UpstreamProject,
                     cancelled: list[tuple[str, Optional[str]]]) -> None:
        """Record upstream's PEP 792 status; a quarantine cancels the project's builds."""
        if is_unknown_status(project.status_reason):
            self.log.warning("%s: %s; withholding it as if quarantined", package,
                             project.status_reason)
        if self.db.set_upstream_status(package, project.status, project.status_reason):
            self.log.info("%s is %s upstream%s", package, project.status,
                          f" ({project.status_reason})" if project.status_reason else "")
            if project.status == QUARANTINED:
                cancelled.append((package, None))

    # --- telling the other tasks ------------------------------------------------------

    def announce(self, touched: set[str], cancelled: list[tuple[str, Optional[str]]]) -> None:
        for package, version in cancelled:
            self.tell(self.cancels, "CANCEL", {"package": package, "version": version})
        for package in touched:
            self.tell(self.index_requests, "PACKAGE", {"package": package})
        if touched:
            # the build queue recalculates from its head whichever project it is
            # told of: one request for the page, not one per project (a page
            # may touch tens of thousands)
            self.tell(self.queue_requests, "REFRESH", {"package": min(touched)})

    def status(self) -> dict:
        return {"events": self.events_applied, "to_read": len(self.to_read),
                "feed": self.feed_enabled}


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
