"""build_queue: keeps the slave driver supplied with the next builds for each ABI.

It recalculates the queue from the database when asked (a build was recorded,
a release appeared, a slave of a new ABI arrived), coalescing bursts of
requests, and on a slow timer as a safety net.  The slave driver gets each
ABI's list whole and replaces what it had.
"""

from __future__ import annotations

import time
from typing import Optional

import zmq

from ..db import Database
from ..protocols import BUILD_QUEUE, QUEUE_REQUESTS
from .task import Clock, Task


#: How long refresh requests are gathered before the queue is recalculated.
COALESCE_S = 0.2


class BuildQueue(Task):
    name = "build_queue"

    def __init__(self, ctx: zmq.Context, *, dsn: str, queue_size: int, interval_s: float,
                 newest_first: bool = True, clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.dsn = dsn
        self.queue_size = queue_size
        self.newest_first = newest_first
        self.db: Optional[Database] = None
        self._wanted = True
        self.requests = self.socket(zmq.PULL, QUEUE_REQUESTS.reverse())
        self.requests.bind(QUEUE_REQUESTS.address)
        self.register(self.requests, self.handle_request)
        self.queue_out = self.socket(zmq.PUSH, BUILD_QUEUE)
        self.queue_out.connect(BUILD_QUEUE.address)
        self.every(COALESCE_S, self.refresh_if_wanted, now=True)
        self.every(interval_s, self.want_refresh)

    def on_start(self) -> None:
        self.db = Database(self.dsn)

    def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "ABI":
            if self.db.register_build_abi(payload["abi_tag"]):
                self.log.info("now building for ABI %s", payload["abi_tag"])
        self._wanted = True

    def want_refresh(self) -> None:
        self._wanted = True

    def refresh_if_wanted(self) -> None:
        if not self._wanted or self.paused:
            return
        self._wanted = False
        for abi_tag in self.db.get_build_abis():
            started = time.perf_counter()
            builds = self.db.pending_builds(abi_tag, self.queue_size, self.newest_first)
            self.log.debug("%d pending builds for %s found in %.0f ms", len(builds), abi_tag,
                           (time.perf_counter() - started) * 1000)
            self.tell(self.queue_out, "QUEUE", {
                "abi_tag": abi_tag,
                "builds": [{"package": p, "version": v} for p, v in builds],
            })
