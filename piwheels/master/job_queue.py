"""The slave driver's list of builds waiting for one target.

build_queue sends it in pages: a recalculation from the head of the queue
(QUEUE) and, when the driver runs low, the page after the last one (EXTEND).
The database lags behind the driver (the recorder writes finished builds a
moment later), so a recalculation may name builds already handed out, and a
page may name builds the driver still holds; this list keeps each job once.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator, Optional

Job = tuple[str, str]


class JobQueue:
    """Jobs in queue order, each at most once."""

    def __init__(self) -> None:
        self._order: deque[Job] = deque()
        self._members: set[Job] = set()

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._order)

    def __contains__(self, job: object) -> bool:
        return job in self._members

    def replace(self, jobs: Iterable[Job], *, keep_rest: bool = False) -> None:
        """Start again from *jobs*; with *keep_rest*, what was here follows them."""
        previous = self._order
        self._order, self._members = deque(), set()
        self.extend(jobs)
        if keep_rest:
            self.extend(previous)

    def extend(self, jobs: Iterable[Job]) -> None:
        """Add *jobs* at the end, leaving out those already here."""
        for job in jobs:
            if job not in self._members:
                self._members.add(job)
                self._order.append(job)

    def pop(self) -> Optional[Job]:
        """The first job (taken off the list), or None."""
        if not self._order:
            return None
        job = self._order.popleft()
        self._members.discard(job)
        return job

    def restore(self, jobs: list[Job]) -> None:
        """Put *jobs* (just popped, in their order) back at the head, unless they
        came back meanwhile."""
        for job in reversed(jobs):
            if job not in self._members:
                self._members.add(job)
                self._order.appendleft(job)

    def remove_if(self, matches: Callable[[Job], bool]) -> None:
        self._order = deque(job for job in self._order if not matches(job))
        self._members = set(self._order)


class HeldBack:
    """Jobs left out of a target's queue because a slave of another target (or
    another slave) was building them: they are offered again as soon as that
    build ends, not at the next recalculation of the queue."""

    def __init__(self) -> None:
        self._targets: dict[Job, set[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._targets)

    def hold(self, job: Job, target: tuple[str, str]) -> None:
        self._targets.setdefault(job, set()).add(target)

    def release(self, job: Job) -> set[tuple[str, str]]:
        """The targets that wait for *job* (forgotten here)."""
        return self._targets.pop(job, set())

    def remove_if(self, matches: Callable[[Job], bool]) -> None:
        for job in [job for job in self._targets if matches(job)]:
            del self._targets[job]
