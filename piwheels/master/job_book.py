"""The slave driver's book of jobs: what waits per ABI, what is being built,
what was just built, and what waits for another build to end.

No sockets and no clock of its own (the driver passes the time): the driver
asks it for the next job of a slave and tells it when a build starts and
ends; it says when the driver should ask build_queue for the next page and
which ABIs have something new to hand out.
"""

from __future__ import annotations

from typing import Optional

from ..tags import build_serves
from .job_queue import HeldBack, Job, JobQueue
from .retries import RetryHolds

#: How long a finished build stays off the queue, covering queue snapshots
#: computed before it was recorded.
RECENT_S = 600.0


class JobBook:
    """Jobs per ABI, each handed to one slave at a time (see the module docstring)."""

    def __init__(self, retry_delay_s: float, recent_s: float = RECENT_S) -> None:
        self.recent_s = recent_s
        self.queues: dict[str, JobQueue] = {}
        #: queue length at which to ask build_queue for more, and ABIs already asked for
        self.refill_at: dict[str, int] = {}
        self.refill_asked: set[str] = set()
        self.active: dict[Job, int] = {}  # (package, version) -> slave_id building it
        self.recent: dict[tuple[str, str, str], float] = {}  # (pkg, ver, abi or "*") -> until
        #: releases that failed once, kept off the builder that failed them
        self.retries = RetryHolds(retry_delay_s, linger_s=recent_s)
        #: jobs passed over while another slave built them, by the ABIs that wait
        self.held_back = HeldBack()

    def take_page(self, name: str, abi_tag: str, sent: list[dict], now_s: float,
                  wall_s: float) -> int:
        """A page of build_queue's (QUEUE, EXTEND or REPLACE); how many of its
        builds were kept (the rest are building or just built)."""
        jobs = [job for job in ((j["package"], j["version"]) for j in sent)
                if self._available(job, abi_tag, now_s)]
        self.retries.from_queue(abi_tag, sent, now_s, wall_s)
        queue = self.queues.setdefault(abi_tag, JobQueue())
        if name in ("QUEUE", "REPLACE"):
            # The database lags behind: when most of its head is handed out
            # already, what was held here (further down) stays behind the rest
            # (unless the build policy changed: then none of it may stay).
            queue.replace(jobs, keep_rest=name == "QUEUE" and len(jobs) < len(sent) // 2)
            # keep a whole list's worth in hand: the next page is asked for
            # as soon as there is less, a good while before it runs out
            self.refill_at[abi_tag] = len(sent)
        else:
            queue.extend(jobs)
        self.refill_asked.discard(abi_tag)
        return len(jobs)

    def has_jobs(self, abi_tag: str) -> bool:
        return bool(self.queues.get(abi_tag))

    def next_job(self, abi_tag: str, identity: str,
                 now_s: float) -> tuple[Optional[Job], bool]:
        """(the next job for builder *identity* of *abi_tag*, or None; whether to
        ask build_queue for the next page now)."""
        queue = self.queues.get(abi_tag)
        ask = False
        if (queue is not None and len(queue) <= self.refill_at.get(abi_tag, 0)
                and abi_tag not in self.refill_asked):
            ask = True  # ask for the next page before the slaves run dry
        passed_over: list[Job] = []
        found = None
        while queue:
            job = queue.pop()
            if not self._available(job, abi_tag, now_s):
                continue
            if self.retries.kept_off(job, abi_tag, identity, now_s):
                passed_over.append(job)  # it waits for another builder
                continue
            found = job
            break
        if passed_over:
            queue.restore(passed_over)
            # all it holds waits for other builders: this one needs the next page
            ask = ask or (found is None and abi_tag not in self.refill_asked)
        if ask:
            self.refill_asked.add(abi_tag)
        return found, ask

    def builder_of(self, job: Job) -> Optional[int]:
        """The slave building *job*, if one is."""
        return self.active.get(job)

    def start(self, job: Job, slave_id: int) -> None:
        self.active[job] = slave_id

    def finished(self, job: Job, abi_tag: str, identity: str, status: Optional[str],
                 files: list[dict], now_s: float, *, hold_back: bool = True
                 ) -> tuple[bool, list[str]]:
        """*job*'s build on *abi_tag* ended with *status* (None: skipped, or not
        the wheel's fault) and *files* (the verified wheels' facts).  Returns
        (whether it was a first failure, offered to other builders again; the
        ABIs with something new to hand out)."""
        until = now_s + self.recent_s
        first_failure = status in ("failed", "rejected") and \
            self.retries.failed(job, abi_tag, identity, now_s)
        if first_failure:
            # the first failure here is a claim: back to the head of the queue,
            # for another builder at once, for this one after the retry delay
            self.queues.setdefault(abi_tag, JobQueue()).restore([job])
        else:
            if status == "success":
                self.retries.settled(job, abi_tag)
            if hold_back:
                self.recent[(*job, abi_tag)] = until
        if status == "success" and any(f["abi_tag"] == "none" for f in files):
            self.recent[(*job, "*")] = until
        self.active.pop(job, None)
        return first_failure, self._build_ended(job, abi_tag, status, files, now_s)

    def lost(self, job: Job, abi_tag: str, now_s: float, *, requeue: bool) -> list[str]:
        """The slave building *job* is gone; with *requeue*, the job goes back
        to the head of its queue.  The ABIs with something new to hand out."""
        self.active.pop(job, None)
        if not requeue:
            return []  # it was adopted by the same builder, reconnected
        if self._wanted(job, abi_tag, now_s):
            self.queues.setdefault(abi_tag, JobQueue()).restore([job])
        return self._build_ended(job, abi_tag, None, [], now_s)

    def forget(self, package: str, version: Optional[str]) -> None:
        """Let *package* (one release, or all) be built again though it was just built
        (or failed: its attempts are gone, so any builder may have it)."""
        for key in [key for key in self.recent
                    if key[0] == package and (version is None or key[1] == version)]:
            del self.recent[key]
        self.retries.forget(package, version)

    def cancel(self, package: str, version: Optional[str]) -> None:
        """Hand out no more of *package* (one release, or all): it changed upstream."""
        def matches(job: Job) -> bool:
            return job[0] == package and (version is None or job[1] == version)

        for queue in self.queues.values():
            queue.remove_if(matches)
        self.held_back.remove_if(matches)

    def expire(self, now_s: float) -> None:
        for key in [key for key, until in self.recent.items() if until <= now_s]:
            del self.recent[key]
        self.retries.expire(now_s)

    def queued(self) -> dict[str, int]:
        return {abi: len(queue) for abi, queue in self.queues.items()}

    def _wanted(self, job: Job, abi_tag: str, now_s: float) -> bool:
        """Whether *job* may be handed out now (the queue can lag behind the slaves)."""
        if job in self.active:
            return False  # one attempt per release at a time: a pure wheel may serve all ABIs
        return (self.recent.get((*job, abi_tag), 0) <= now_s
                and self.recent.get((*job, "*"), 0) <= now_s)

    def _available(self, job: Job, abi_tag: str, now_s: float) -> bool:
        """:meth:`_wanted`; a job left out because it is being built is noted as
        held back for *abi_tag*, to be offered again when that build ends."""
        if job in self.active:
            self.held_back.hold(job, abi_tag)
            return False
        return self._wanted(job, abi_tag, now_s)

    def _build_ended(self, job: Job, abi_tag: str, status: Optional[str], files: list[dict],
                     now_s: float) -> list[str]:
        """Put *job* back at the head of the queues of the ABIs that waited for
        it (less those its wheels serve): at once, not at the next
        recalculation.  The ABIs with something new to hand out."""
        tags = [(f["py_tag"], f["abi_tag"]) for f in files]
        waiting = self.held_back.release(job)
        for waiting_abi in waiting:
            if not build_serves(abi_tag, status or "", tags, waiting_abi) \
                    and self._wanted(job, waiting_abi, now_s):
                self.queues.setdefault(waiting_abi, JobQueue()).restore([job])
        return sorted(waiting | {abi_tag})
