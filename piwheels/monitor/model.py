"""What the monitor knows of the farm: the master's summary and one record per slave.

The model is fed by the SNAPSHOT the master answers when the monitor connects
and then by the master's STATUS feed.  It owns no socket and no screen, so
tests drive it directly.  Two clocks: ``now_s`` is the monitor's monotonic
clock (when a report was received, to let times move between reports), and
``wall_now`` is ``time.time()``, the clock the master stamps ``connected_at``
and ``started_at`` with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: The master reports every slave every 2 s; one unheard of for this long is
#: forgotten (it went while the monitor was not listening).
SLAVE_STALE_S = 10.0

# the monitor's connection to the master
CONNECTING = "connecting"
CONNECTED = "connected"
UNREACHABLE = "unreachable"


@dataclass
class SlaveRecord:
    """The master's last report on one slave, and when it was received."""

    report: dict
    received_s: float

    @property
    def slave_id(self) -> int:
        return self.report["slave_id"]

    @property
    def label(self) -> str:
        return self.report.get("label", "?")

    @property
    def building(self) -> Optional[str]:
        """``package version`` of the current build, or None."""
        if self.report.get("package") is None:
            return None
        return f"{self.report['package']} {self.report.get('version') or ''}".strip()

    def job_s(self, now_s: float) -> Optional[float]:
        """How long the current build has run, as of *now_s*."""
        job_s = self.report.get("job_s")
        if job_s is None:
            return None
        return job_s + max(0.0, now_s - self.received_s)

    def last_seen_s(self, now_s: float) -> Optional[float]:
        """Seconds since the master last heard from the slave, as of *now_s*."""
        seen = self.report.get("last_seen_s")
        if seen is None:
            return None
        return seen + max(0.0, now_s - self.received_s)

    def uptime_s(self, wall_now: float) -> Optional[float]:
        connected_at = self.report.get("connected_at")
        if not connected_at:
            return None
        return max(0.0, wall_now - connected_at)


@dataclass
class Notice:
    """The answer to the operator's last action (or why it was not sent)."""

    text: str
    error: bool
    at_s: float


@dataclass
class FarmModel:
    """The farm as the monitor last heard of it."""

    master: dict = field(default_factory=dict)
    master_received_s: Optional[float] = None
    slaves: dict[int, SlaveRecord] = field(default_factory=dict)
    link: str = CONNECTING
    link_reason: Optional[str] = None
    link_since_s: float = 0.0
    notice: Optional[Notice] = None

    # --- what the master says -------------------------------------------------

    def apply_snapshot(self, snapshot: dict, now_s: float) -> None:
        """The whole picture (the answer to SNAPSHOT): it replaces what was known."""
        self.master = dict(snapshot["master"])
        self.master_received_s = now_s
        self.slaves = {report["slave_id"]: SlaveRecord(dict(report), now_s)
                       for report in snapshot["slaves"] if "slave_id" in report}

    def apply_status(self, name: str, payload: dict, now_s: float) -> None:
        """One message of the STATUS feed."""
        if name == "MASTER":
            self.master = dict(payload["master"])
            self.master_received_s = now_s
        elif name == "SLAVE":
            report = payload["slave"]
            if "slave_id" in report:
                self.slaves[report["slave_id"]] = SlaveRecord(dict(report), now_s)
        elif name == "SLAVE_GONE":
            self.slaves.pop(payload["slave_id"], None)

    def forget_stale(self, now_s: float) -> None:
        """Drop slaves the master has stopped mentioning (while connected)."""
        for slave_id, record in list(self.slaves.items()):
            if now_s - record.received_s > SLAVE_STALE_S:
                del self.slaves[slave_id]

    def sorted_slaves(self) -> list[SlaveRecord]:
        return [self.slaves[slave_id] for slave_id in sorted(self.slaves)]

    @property
    def master_paused(self) -> bool:
        return bool(self.master.get("paused"))

    # --- the connection and the operator ----------------------------------------

    def set_link(self, state: str, reason: Optional[str], now_s: float) -> None:
        if state != self.link:
            self.link_since_s = now_s
        self.link, self.link_reason = state, reason

    def tell(self, text: str, now_s: float, *, error: bool = False) -> None:
        self.notice = Notice(text, error, now_s)
