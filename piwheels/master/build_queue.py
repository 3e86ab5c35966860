"""build_queue: keeps the slave driver supplied with the next builds for each ABI.

It recalculates the queue from its head when something may have changed its
order (a release appeared or was re-queued, a slave of a new ABI arrived),
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
from ..tags import build_abi_problem
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
        #: per ABI, where the last list sent ended (None: at the end of the queue)
        self.cursors: dict[str, Optional[QueueKey]] = {}
        #: the ABIs last told to the slave driver (it lets keyless slaves build only these)
        self.abis_told: Optional[list[str]] = None
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
        """The driver hears which ABIs the farm knows before it takes any slave."""
        self.tell_abis()

    def tell_abis(self) -> None:
        """Tell the slave driver every ABI the farm knows, when that changed."""
        known = self.db.get_build_abis(active_only=False)
        if known != self.abis_told:
            self.abis_told = known
            self.tell(self.queue_out, "ABIS", {"abi_tags": known})

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "MORE":
            self.send_more(payload["abi_tag"])
            return
        if name == "ABI":
            problem = build_abi_problem(payload["abi_tag"])
            if problem is not None:
                # the slave driver refuses such slaves; this is the last line before the table
                self.log_limited("bad-abi", logging.WARNING, "ABI not registered: %s", problem)
                return
            if self.db.register_build_abi(payload["abi_tag"]):
                self.log.info("now building for ABI %s", payload["abi_tag"])
        elif name == "IMAGE":
            if not self.db.register_image(payload["image"], payload["abi_tag"], payload["os"]):
                return  # known: nothing changed
            self.log.info("new builder image %s for %s (%s): what it may fix is built again",
                          payload["image"][:12], payload["abi_tag"], payload["os"])
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
        self.tell_abis()
        for abi_tag in self.db.get_build_abis():
            self._send_page(name, abi_tag, None)

    def send_more(self, abi_tag: str) -> None:
        """The page after the last one sent for *abi_tag*, if there is one."""
        if abi_tag not in self.cursors:
            self._wanted = True  # nothing sent since the last recalculation: start over
        elif self.cursors[abi_tag] is not None:
            self._send_page("EXTEND", abi_tag, self.cursors[abi_tag])

    def _send_page(self, name: str, abi_tag: str, after: Optional[QueueKey]) -> None:
        started = time.perf_counter()
        builds, self.cursors[abi_tag] = self.db.pending_page(
            abi_tag, self.queue_size, self.newest_first, after)
        self.log.debug("%d pending builds for %s found in %.0f ms (%s)", len(builds), abi_tag,
                       (time.perf_counter() - started) * 1000, name)
        # a release that failed once here waits for its retry: the driver offers
        # it to another builder first (and to this one only after a delay)
        holds = self.db.retry_holds(abi_tag, builds)
        # and it is never offered to an image it failed on for a deterministic cause
        images = self.db.image_holds(abi_tag, builds)
        # what upstream says of each: the driver skips it for a slave that need not build it
        facts = self.db.release_facts(builds)
        self.tell(self.queue_out, name, {
            "abi_tag": abi_tag,
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
