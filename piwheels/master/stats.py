"""stats: the farm's figures for the monitor, and the guard on free disk space.

Every few seconds it reads the database's counts (builds per hour per ABI,
pending builds per ABI, success rate) and this machine's load, memory, disk
and temperature, and reports them.  When the output directory's free space
falls under the configured minimum it tells the slave driver to hold new
builds, says so in the log and on the monitor, and lets them go again once
space returns.  The minimum can be changed while the master runs (the
MIN_FREE_SPACE control request).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import zmq

from ..host_stats import host_stats
from ..protocols import DRIVER_COMMANDS, STATS_COMMANDS
from .db_task import DatabaseTask
from .task import Clock

DISK_HOLD = "free disk space is low"


class Stats(DatabaseTask):
    name = "stats"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path, min_free_bytes: int,
                 interval_s: float, clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.output_path = Path(output_path)
        self.min_free_bytes = min_free_bytes
        self.figures: dict = {}
        self.disk_low = False
        self.driver = self.socket(zmq.PUSH, DRIVER_COMMANDS)
        self.driver.connect(DRIVER_COMMANDS.address)
        self.commands = self.socket(zmq.PULL, STATS_COMMANDS.reverse())
        self.commands.bind(STATS_COMMANDS.address)
        self.register(self.commands, self.handle_command)
        self.every(interval_s, self.gather, now=True)

    def handle_command(self) -> None:
        msg = self.recv_or_log(self.commands)
        if msg is None:
            return
        _, payload = msg
        self.log.info("minimum free space under %s: %d MiB (was %d MiB)", self.output_path,
                      payload["bytes"] // 2**20, self.min_free_bytes // 2**20)
        self.min_free_bytes = payload["bytes"]
        self.gather()

    def gather(self) -> None:
        host = host_stats(self.output_path)
        self.check_disk(host["disk_free"])
        self.figures = {**self.db.build_statistics(), **host, "disk_low": self.disk_low,
                        "min_free": self.min_free_bytes}
        self.report_status()

    def check_disk(self, free: Optional[int]) -> None:
        if free is None:
            return
        low = free < self.min_free_bytes
        if low and not self.disk_low:
            self.log.warning("only %d MiB free under %s (minimum %d MiB): holding new builds",
                             free // 2**20, self.output_path, self.min_free_bytes // 2**20)
            self._tell("HOLD")
        elif not low and self.disk_low:
            self.log.info("%d MiB free under %s again (minimum %d MiB): builds resume",
                          free // 2**20, self.output_path, self.min_free_bytes // 2**20)
            self._tell("RELEASE")
        elif low:
            self._tell("HOLD")  # again, in case the slave driver restarted
        self.disk_low = low

    def _tell(self, name: str) -> None:
        try:
            self.driver.send(name, {"reason": DISK_HOLD}, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.log.warning("the slave driver is not listening")

    def status(self) -> dict:
        return self.figures
