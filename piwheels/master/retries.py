"""The slave driver's memory of releases that failed once, waiting for their retry.

A failed attempt is only a builder's claim: any peer that reaches the slave
port can send one.  So the release goes back to its ABI's queue for every
other builder at once, and to the builder that failed it only after the retry
delay (a farm with one builder for an ABI still retries it).  The attempt
after that settles it; the database counts the two (``needs_build``).  The
queue's pages name the builder that failed a release once (the database
remembers what a restarted master forgot), and what this task saw itself is
as new, so it stays.
"""

from __future__ import annotations

from typing import Optional

from .job_queue import Job

#: (package, version, abi)
Key = tuple[str, str, str]


class RetryHolds:
    """Per (release, ABI) that failed once: which builder failed it, and until
    when (monotonic) it is kept off it."""

    def __init__(self, retry_delay_s: float, linger_s: float) -> None:
        self.retry_delay_s = retry_delay_s
        #: how long an entry outlives its delay: a retry by the same builder
        #: after it is still the retry
        self.linger_s = linger_s
        self._held: dict[Key, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def failed(self, job: Job, abi: str, identity: str, now_s: float) -> bool:
        """Note a failure of *job* on *abi* by *identity*.  True if it was the
        first (the release is to be offered again); False if it was the retry
        (it is settled, and forgotten here)."""
        key = (*job, abi)
        if key in self._held:
            del self._held[key]
            return False
        self._held[key] = (identity, now_s + self.retry_delay_s)
        return True

    def settled(self, job: Job, abi: str) -> None:
        """*job* finished on *abi* some other way (built, rejected as a retry)."""
        self._held.pop((*job, abi), None)

    def from_queue(self, abi: str, entries: list[dict], now_s: float, wall_s: float) -> None:
        """Take the builders a queue page names as having failed its releases
        (``failed_by``, ``failed_at`` in wall-clock seconds)."""
        for entry in entries:
            if entry["failed_by"] is not None:
                until = now_s + entry["failed_at"] + self.retry_delay_s - wall_s
                self._held.setdefault((entry["package"], entry["version"], abi),
                                      (entry["failed_by"], until))

    def kept_off(self, job: Job, abi: str, identity: str, now_s: float) -> bool:
        """Whether *identity* failed *job* on *abi* and its retry delay is not over."""
        held: Optional[tuple[str, float]] = self._held.get((*job, abi))
        return held is not None and held[0] == identity and held[1] > now_s

    def forget(self, package: str, version: Optional[str]) -> None:
        """An operator removed the builds of *package* (one release, or all)."""
        for key in [key for key in self._held
                    if key[0] == package and (version is None or key[1] == version)]:
            del self._held[key]

    def expire(self, now_s: float) -> None:
        for key in [key for key, (_, until) in self._held.items()
                    if until + self.linger_s <= now_s]:
            del self._held[key]
