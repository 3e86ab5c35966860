"""build_queue: keeps the slave driver supplied with the next builds for each
build target (ABI, platform).

It recalculates each target's queue from its head when something may have
changed its order (a release appeared or was re-queued, a slave of a new
target arrived),
coalescing bursts of requests, and on a slow timer as a safety net; the slave
driver replaces what it had with that list.  When the driver runs low it asks
for MORE and gets the page that follows the last build sent, which costs a
short walk of the index from there rather than a new pass over the head.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import zmq

from ..db_queue import QueueKey
from ..protocols import BUILD_QUEUE, INDEX_REQUESTS, MAX_FAILED_IMAGES, QUEUE_REQUESTS
from ..tags import Target, target_problem
from .db_task import DatabaseTask
from .task import Clock


#: How long refresh requests are gathered before the queue is recalculated.
COALESCE_S = 0.2
#: More projects than this changing verdict at once: every page is rewritten instead.
POLICY_PAGES_LIMIT = 1000


class BuildQueue(DatabaseTask):
    name = "build_queue"

    def __init__(self, ctx: zmq.Context, *, dsn: str, queue_size: int, interval_s: float,
                 newest_first: bool = True, build_upstream_wheels: bool = False,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.queue_size = queue_size
        self.newest_first = newest_first
        #: the operator's --build-upstream-wheels: the driver is not told upstream's
        #: wheels, so it skips nothing for them (Requires-Python still counts)
        self.build_upstream_wheels = build_upstream_wheels
        self._wanted = True
        #: the next recalculation replaces the driver's whole queue (the policy changed)
        self._replace = False
        #: per target, where the last list sent ended (None: at the end of the queue)
        self.cursors: dict[Target, Optional[QueueKey]] = {}
        #: the targets last told to the slave driver (it lets keyless slaves build
        #: only these, and a pinned one only on its OS release)
        self.targets_told: Optional[list[dict]] = None
        self.requests = self.socket(zmq.PULL, QUEUE_REQUESTS.reverse())
        self.requests.bind(QUEUE_REQUESTS.address)
        self.register(self.requests, self.handle_request)
        self.queue_out = self.socket(zmq.PUSH, BUILD_QUEUE)
        self.queue_out.connect(BUILD_QUEUE.address)
        self.index_out = self.socket(zmq.PUSH, INDEX_REQUESTS)
        self.index_out.connect(INDEX_REQUESTS.address)
        self.every(COALESCE_S, self.refresh_if_wanted, now=True)
        self.every(interval_s, self.want_refresh)

    def on_start(self) -> None:
        """The driver hears which targets the farm knows before it takes any slave."""
        self.tell_targets()

    def tell_targets(self) -> None:
        """Tell the slave driver every target the farm knows, when that changed."""
        known = [row._asdict() for row in self.db.get_target_rows()]
        if known != self.targets_told:
            self.targets_told = known
            self.tell(self.queue_out, "TARGETS", {"targets": known})

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "MORE":
            self.send_more(Target(payload["abi_tag"], payload["platform_tag"]))
            return
        if name == "TARGET":
            problem = target_problem(payload["abi_tag"], payload["platform_tag"])
            if problem is not None:
                # the slave driver refuses such slaves; this is the last line before the table
                self.log_limited("bad-target", logging.WARNING, "target not registered: %s",
                                 problem)
                return
            target = Target(payload["abi_tag"], payload["platform_tag"])
            if self.db.register_build_target(target):
                self.log.info("now building for target %s", target)
        elif name == "IMAGE":
            target = Target(payload["abi_tag"], payload["platform_tag"])
            if not self.db.register_image(payload["image"], target, payload["os"]):
                return  # known: nothing changed
            self.log.info("new builder image %s for %s (%s): what it may fix is built again",
                          payload["image"][:12], target, payload["os"])
        elif name == "POLICY":
            self.weigh_releases(payload["package"])
        self._wanted = True

    def weigh_releases(self, package: Optional[str]) -> None:
        """A build policy changed: weigh the releases of *package* (None: every
        project) again, have the changed pages rewritten, and replace the
        driver's whole queue at the next recalculation."""
        started = time.perf_counter()
        changed = self.db.apply_policies(None if package is None else [package])
        self.log.info("build policy applied to %s in %.1f s: the releases of %d project(s) "
                      "changed", package or "every project", time.perf_counter() - started,
                      len(changed))
        if len(changed) > POLICY_PAGES_LIMIT:
            self.tell(self.index_out, "ALL")
        else:
            for name in sorted(changed):
                self.tell(self.index_out, "PACKAGE", {"package": name})
        self._replace = True

    def want_refresh(self) -> None:
        self._wanted = True

    def refresh_if_wanted(self) -> None:
        if not self._wanted or self.paused:
            return
        self._wanted = False
        self.cursors.clear()
        name, self._replace = ("REPLACE" if self._replace else "QUEUE"), False
        self.tell_targets()
        for target in self.db.get_build_targets():
            self._send_page(name, target, None)

    def send_more(self, target: Target) -> None:
        """The page after the last one sent for *target*, if there is one."""
        if target not in self.cursors:
            self._wanted = True  # nothing sent since the last recalculation: start over
        elif self.cursors[target] is not None:
            self._send_page("EXTEND", target, self.cursors[target])

    def _send_page(self, name: str, target: Target, after: Optional[QueueKey]) -> None:
        started = time.perf_counter()
        builds, self.cursors[target] = self.db.pending_page(
            target, self.queue_size, self.newest_first, after)
        self.log.debug("%d pending builds for %s found in %.0f ms (%s)", len(builds), target,
                       (time.perf_counter() - started) * 1000, name)
        # a release that failed once here waits for its retry: the driver offers
        # it to another builder first (and to this one only after a delay)
        holds = self.db.retry_holds(target, builds)
        # and it is never offered to an image it failed on for a deterministic cause
        images = self.db.image_holds(target, builds)
        # what upstream says of each: the driver skips it for a slave that need not build it
        facts = self.db.release_facts(builds)
        self.tell(self.queue_out, name, {
            "abi_tag": target.abi_tag, "platform_tag": target.platform_tag,
            "builds": [{"package": p, "version": v, **self._facts(facts.get((p, v))),
                        "failed_by": holds[p, v][0] if (p, v) in holds else None,
                        "failed_at": holds[p, v][1].timestamp() if (p, v) in holds else None,
                        "failed_images": sorted(images.get((p, v), ()))[:MAX_FAILED_IMAGES]}
                       for p, v in builds],
        })

    def _facts(self, facts: Optional[tuple[Optional[str], list[str]]]) -> dict:
        requires, wheels = facts or (None, [])
        return {"requires_python": requires,
                "upstream_wheels": [] if self.build_upstream_wheels else wheels}
