"""What the slave driver knows of each connected slave and of the build it holds.

Plain records, no sockets: the driver changes them as messages arrive, and a
monitor sees them through :meth:`SlaveState.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from ..diagnosis import CAUSES
from ..limits import CAUSE_DETAIL
from ..tags import Target
from .job_queue import Job


class SlaveStatus(Enum):
    """Where a slave is in the protocol, as the master sees it."""

    IDLE = "idle"           # greeted, or just finished: its next IDLE gets a build
    PARKED = "parked"       # its IDLE waits for a job (answered within a heartbeat)
    SLEEPING = "sleeping"   # told to SLEEP: builds are held, or it was parked a heartbeat
    BUILDING = "building"   # handed a build (or building one it had before a reconnect)
    SENDING = "sending"     # its BUILT was accepted: its wheels are on their way


@dataclass
class Attempt:
    """One build handed to one slave, from BUILD (or adoption) to DONE or a drop."""

    job: Job
    build_started: float  # wall-clock, for the record
    job_started_s: float  # monotonic, for monitors
    built: Optional[dict] = None
    files_todo: list[str] = field(default_factory=list)
    #: filename -> the facts the file receiver computed, and where the file waits
    files_done: dict[str, dict] = field(default_factory=dict)
    sending: Optional[str] = None
    rejected: Optional[str] = None
    retry_later: bool = False  # the rejection was not the wheel's fault: queue it again
    reply_deferred: bool = False
    skip: bool = False


@dataclass
class SlaveState:
    """What the master knows of one connected slave."""

    slave_id: int
    address: bytes
    label: str
    python_tag: str
    abi_tag: str
    platform_tag: str
    python_version: str
    os: str
    build_timeout_s: float
    connected_s: float
    last_seen_s: float
    #: when the master last answered it after keeping it parked (monotonic): its
    #: liveness counts from the later of this and last_seen_s
    answered_s: float = 0.0
    #: the id of its enrolled CURVE key (None: a farm without keys)
    key_id: Optional[str] = None
    #: how its builds are contained, as it says ("none: ..." when they are not)
    containment: str = "none: unknown"
    #: the digest of its builder image (piwheels.slave.image)
    image: str = ""
    #: the platform tags its interpreter accepts, most specific first (HELLO's)
    platforms: tuple[str, ...] = ()
    state: SlaveStatus = SlaveStatus.IDLE
    attempt: Optional[Attempt] = None
    sleep_s: float = 0.0
    paused: bool = False
    stop: bool = False
    connected_at: float = 0.0  # wall-clock, for monitors
    last_seen_at: float = 0.0
    stats: dict = field(default_factory=dict)
    #: its latest unsuccessful attempt, for monitors: package, version, and the
    #: cause as the builder diagnosed it (the recorder stores the master's own)
    last_failure: Optional[dict] = None

    @property
    def identity(self) -> str:
        """Who is answerable for this slave's attempts, recorded with each and kept
        off a release it failed: its enrolled key's id (a label can be anyone's),
        or its label in a farm without keys."""
        return self.key_id or self.label

    @property
    def target(self) -> Target:
        """What it builds for: its interpreter's ABI on its platform (HELLO's)."""
        return Target(self.abi_tag, self.platform_tag)

    @property
    def accepted_platforms(self) -> tuple[str, ...]:
        """The platforms its wheels may carry: its own first, then what its
        interpreter accepts (HELLO's ``platforms``)."""
        return (self.platform_tag, *(p for p in self.platforms if p != self.platform_tag))

    @property
    def job(self) -> Optional[Job]:
        return self.attempt.job if self.attempt is not None else None

    def failed(self, status: str, reason: Optional[str], claimed: Optional[dict]) -> None:
        """Keep what a monitor shows of its attempt that just failed: a rejection is the
        master's word (``bad-wheel``), a failure's cause the builder's diagnosis (the
        driver reads no log; the recorder diagnoses it and stores its own)."""
        if status == "rejected" or claimed is None:
            claimed = {"cause": "bad-wheel" if status == "rejected" else "unknown",
                       "detail": (reason or "")[:CAUSE_DETAIL], "package": None}
        self.last_failure = {
            "package": self.job[0], "version": self.job[1], "cause": claimed["cause"],
            "label": CAUSES[claimed["cause"]].label, "detail": claimed["detail"],
            "install": claimed["package"]}

    def report(self, now_s: float) -> dict:
        """What a monitor shows of this slave."""
        job = self.job
        return {
            "slave_id": self.slave_id, "label": self.label, "abi_tag": self.abi_tag,
            "platform_tag": self.platform_tag, "target": self.target.label,
            "python_version": self.python_version,
            "os": self.os, "state": self.state.value, "paused": self.paused,
            "key_id": self.key_id, "containment": self.containment, "image": self.image,
            "connected_at": self.connected_at,
            "last_seen_s": round(now_s - self.last_seen_s, 1),
            "package": job[0] if job else None,
            "version": job[1] if job else None,
            "job_s": round(now_s - self.attempt.job_started_s, 1) if job else None,
            "last_failure": self.last_failure,
            **self.stats,
        }
