"""The slave driver's memory of releases that failed once, waiting for their retry.

A failed attempt is only a builder's claim: any peer that reaches the slave
port can send one.  So the release goes back to its target's queue for every
other builder at once, and to the builder that failed it only after the retry
delay (a farm with one builder for a target still retries it).  The attempt
after that settles it; the database counts the two (``needs_build``).  The
queue's pages name the builder that failed a release once (the database
remembers what a restarted master forgot), and what this task saw itself is
as new, so it stays.

A failure for a deterministic cause (the same sdist fails the same way again
on the same image) also keeps the release off every builder of that image for
good: the pages name those images (``failed_images``), and whether the
failure waits for another image or counts at once is the database's rule
(``failures_settle``).
"""

from __future__ import annotations

from typing import Optional

from ..diagnosis import diagnose
from .job_queue import Job

#: (package, version, target)
Key = tuple[str, str, tuple[str, str]]
#: How much of a failed build's log (its tail, where pip's error ends it) the
#: driver reads for the cause: a millisecond or so, on the hot path.
CAUSE_LOG_TAIL_CHARS = 32 * 1024


def failure_cause(built: dict, reason: Optional[str]) -> str:
    """Why a failed build failed, as the driver needs it at once (which images
    may have it next): a code of :data:`piwheels.diagnosis.CAUSES`, read from
    its reason and its log's tail by the master itself, as the recorder reads
    the whole log for the record (BUILT's own diagnosis is the builder's claim)."""
    return diagnose(built["log"][-CAUSE_LOG_TAIL_CHARS:], reason or "").cause


class RetryHolds:
    """Per (release, target) that failed once: which builder failed it, and until
    when (monotonic) it is kept off it."""

    def __init__(self, retry_delay_s: float, linger_s: float) -> None:
        self.retry_delay_s = retry_delay_s
        #: how long an entry outlives its delay: a retry by the same builder
        #: after it is still the retry
        self.linger_s = linger_s
        self._held: dict[Key, tuple[str, float]] = {}
        #: the images a release failed on for a deterministic cause, never offered
        #: it, and when last told so (kept for linger_s: the pages say it again)
        self._images: dict[Key, tuple[set[str], float]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def failed(self, job: Job, target: tuple[str, str], identity: str, now_s: float, *,
               image: Optional[str] = None, deterministic: bool = False) -> bool:
        """Note a failure of *job* on *target* by *identity* (on *image*, for a
        *deterministic* cause or not).  True if it was the first (the release
        is to be offered again); False if it was the retry (it is settled, and
        forgotten here, but for the image it failed on)."""
        key = (*job, target)
        if deterministic and image is not None:
            self._hold_images(key, [image], now_s)
        if key in self._held:
            del self._held[key]
            return False
        self._held[key] = (identity, now_s + self.retry_delay_s)
        return True

    def settled(self, job: Job, target: tuple[str, str]) -> None:
        """*job* finished on *target* some other way (built, rejected as a retry)."""
        self._held.pop((*job, target), None)

    def from_queue(self, target: tuple[str, str], entries: list[dict], now_s: float, wall_s: float) -> None:
        """Take the builders a queue page names as having failed its releases
        (``failed_by``, ``failed_at`` in wall-clock seconds)."""
        for entry in entries:
            if entry["failed_images"]:
                self._hold_images((entry["package"], entry["version"], target),
                                  entry["failed_images"], now_s)
            if entry["failed_by"] is not None:
                until = now_s + entry["failed_at"] + self.retry_delay_s - wall_s
                self._held.setdefault((entry["package"], entry["version"], target),
                                      (entry["failed_by"], until))

    def kept_off(self, job: Job, target: tuple[str, str], identity: str, now_s: float,
                 image: Optional[str] = None) -> bool:
        """Whether *job* on *target* is not for this builder: *identity* failed it
        and its retry delay is not over, or it failed on *image* for a
        deterministic cause."""
        if image is not None and image in self._images.get((*job, target), ((), 0.0))[0]:
            return True
        held: Optional[tuple[str, float]] = self._held.get((*job, target))
        return held is not None and held[0] == identity and held[1] > now_s

    def forget(self, package: str, version: Optional[str]) -> None:
        """An operator removed the builds of *package* (one release, or all)."""
        for held in (self._held, self._images):
            for key in [key for key in held
                        if key[0] == package and (version is None or key[1] == version)]:
                del held[key]

    def _hold_images(self, key: Key, images: list[str], now_s: float) -> None:
        held = self._images.get(key, (set(), now_s))[0]
        held.update(images)
        self._images[key] = (held, now_s)

    def expire(self, now_s: float) -> None:
        for key in [key for key, (_, until) in self._held.items()
                    if until + self.linger_s <= now_s]:
            del self._held[key]
        for key in [key for key, (_, noted) in self._images.items()
                    if noted + self.linger_s <= now_s]:
            del self._images[key]
