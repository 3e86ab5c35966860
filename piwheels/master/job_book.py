"""The slave driver's book of jobs: what waits per build target (ABI,
platform), what is being built,
what was just built, and what waits for another build to end.

No sockets and no clock of its own (the driver passes the time): the driver
asks it for the next job of a slave and tells it when a build starts and
ends; it says when the driver should ask build_queue for the next page and
which targets have something new to hand out.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ..tags import Target, build_serves
from .job_queue import HeldBack, Job, JobQueue
from .retries import RetryHolds

#: How long a finished build stays off the queue, covering queue snapshots
#: computed before it was recorded.
RECENT_S = 600.0


class Success(NamedTuple):
    """A build just recorded, whose wheels may serve other targets too (a pure one
    every target, an abi3 one the later ABIs of its platform)."""

    until_s: float  # when the queue no longer lags behind it
    built_on: Target
    wheel_tags: list[tuple[str, str, str]]  # its wheels' (py_tag, abi_tag, platform_tag)


class JobBook:
    """Jobs per target, each handed to one slave at a time (see the module docstring)."""

    def __init__(self, retry_delay_s: float, recent_s: float = RECENT_S) -> None:
        self.recent_s = recent_s
        self.queues: dict[Target, JobQueue] = {}
        #: queue length at which to ask build_queue for more, and targets already asked for
        self.refill_at: dict[Target, int] = {}
        self.refill_asked: set[Target] = set()
        self.active: dict[Job, int] = {}  # (package, version) -> slave_id building it
        #: (pkg, ver, target) -> until
        self.recent: dict[tuple, float] = {}
        #: (pkg, ver) -> its successes just recorded
        self.served: dict[Job, list[Success]] = {}
        #: releases that failed once, kept off the builder that failed them
        self.retries = RetryHolds(retry_delay_s, linger_s=recent_s)
        #: jobs passed over while another slave built them, by the targets that wait
        self.held_back = HeldBack()

    def take_page(self, name: str, target: Target, sent: list[dict], now_s: float,
                  wall_s: float) -> int:
        """A page of build_queue's (QUEUE, EXTEND or REPLACE); how many of its
        builds were kept (the rest are building or just built)."""
        jobs = [job for job in ((j["package"], j["version"]) for j in sent)
                if self._available(job, target, now_s)]
        self.retries.from_queue(target, sent, now_s, wall_s)
        queue = self.queues.setdefault(target, JobQueue())
        if name in ("QUEUE", "REPLACE"):
            # The database lags behind: when most of its head is handed out
            # already, what was held here (further down) stays behind the rest
            # (unless the build policy changed: then none of it may stay).
            queue.replace(jobs, keep_rest=name == "QUEUE" and len(jobs) < len(sent) // 2)
            # keep a whole list's worth in hand: the next page is asked for
            # as soon as there is less, a good while before it runs out
            self.refill_at[target] = len(sent)
        else:
            queue.extend(jobs)
        self.refill_asked.discard(target)
        return len(jobs)

    def has_jobs(self, target: Target) -> bool:
        return bool(self.queues.get(target))

    def next_job(self, target: Target, identity: str, now_s: float,
                 image: Optional[str] = None) -> tuple[Optional[Job], bool]:
        """(the next job for builder *identity* (on *image*) of *target*, or
        None; whether to ask build_queue for the next page now)."""
        queue = self.queues.get(target)
        ask = False
        if (queue is not None and len(queue) <= self.refill_at.get(target, 0)
                and target not in self.refill_asked):
            ask = True  # ask for the next page before the slaves run dry
        passed_over: list[Job] = []
        found = None
        while queue:
            job = queue.pop()
            if not self._available(job, target, now_s):
                continue
            if self.retries.kept_off(job, target, identity, now_s, image):
                passed_over.append(job)  # it waits for another builder, or image
                continue
            found = job
            break
        if passed_over:
            queue.restore(passed_over)
            # all it holds waits for other builders: this one needs the next page
            ask = ask or (found is None and target not in self.refill_asked)
        if ask:
            self.refill_asked.add(target)
        return found, ask

    def builder_of(self, job: Job) -> Optional[int]:
        """The slave building *job*, if one is."""
        return self.active.get(job)

    def start(self, job: Job, slave_id: int) -> None:
        self.active[job] = slave_id

    def finished(self, job: Job, target: Target, identity: str, status: Optional[str],
                 files: list[dict], now_s: float, *, hold_back: bool = True,
                 image: Optional[str] = None, deterministic: bool = False
                 ) -> tuple[bool, list[Target]]:
        """*job*'s build on *target* ended with *status* (None: skipped, or not
        the wheel's fault) and *files* (the verified wheels' facts).  Returns
        (whether it was a first failure, offered to other builders again; the
        targets with something new to hand out).  A failure for a *deterministic*
        cause on *image* is kept off that image for good."""
        until = now_s + self.recent_s
        first_failure = status in ("failed", "rejected") and self.retries.failed(
            job, target, identity, now_s, image=image, deterministic=deterministic)
        if first_failure:
            # the first failure here is a claim: back to the head of the queue,
            # for another builder at once, for this one after the retry delay
            self.queues.setdefault(target, JobQueue()).restore([job])
        else:
            if status == "success":
                self.retries.settled(job, target)
            if hold_back and not deterministic:
                # (a deterministic failure is kept off its image instead: a new
                # image may build it again at once)
                self.recent[(*job, target)] = until
        if status == "success":
            self.served.setdefault(job, []).append(Success(until, target, self._tags(files)))
        self.active.pop(job, None)
        return first_failure, self._build_ended(job, target, status, files, now_s)

    def lost(self, job: Job, target: Target, now_s: float, *, requeue: bool) -> list[Target]:
        """The slave building *job* is gone; with *requeue*, the job goes back
        to the head of its queue.  The targets with something new to hand out."""
        self.active.pop(job, None)
        if not requeue:
            return []  # it was adopted by the same builder, reconnected
        if self._wanted(job, target, now_s):
            self.queues.setdefault(target, JobQueue()).restore([job])
        return self._build_ended(job, target, None, [], now_s)

    def forget(self, package: str, version: Optional[str]) -> None:
        """Let *package* (one release, or all) be built again though it was just built
        (or failed: its attempts are gone, so any builder may have it)."""
        for key in [key for key in self.recent
                    if key[0] == package and (version is None or key[1] == version)]:
            del self.recent[key]
        for job in [job for job in self.served
                    if job[0] == package and (version is None or job[1] == version)]:
            del self.served[job]
        self.retries.forget(package, version)

    def cancel(self, package: str, version: Optional[str]) -> None:
        """Hand out no more of *package* (one release, or all): it changed upstream."""
        def matches(job: Job) -> bool:
            return job[0] == package and (version is None or job[1] == version)

        for queue in self.queues.values():
            queue.remove_if(matches)
        self.held_back.remove_if(matches)

    def keep_targets(self, active: set[Target]) -> None:
        """Hand out nothing more for a target not in *active* (an operator retired it)."""
        for target in [target for target in self.queues if target not in active]:
            del self.queues[target]

    def expire(self, now_s: float) -> None:
        for key in [key for key, until in self.recent.items() if until <= now_s]:
            del self.recent[key]
        for job, successes in list(self.served.items()):
            successes[:] = [success for success in successes if success.until_s > now_s]
            if not successes:
                del self.served[job]
        self.retries.expire(now_s)

    def queued(self) -> dict[str, int]:
        """Jobs in hand per target, keyed "abi platform" (for monitors)."""
        return {str(target): len(queue) for target, queue in self.queues.items()}

    def _wanted(self, job: Job, target: Target, now_s: float) -> bool:
        """Whether *job* may be handed out now (the queue can lag behind the slaves)."""
        if job in self.active:
            return False  # one attempt per release at a time: a pure wheel may serve all targets
        return self.recent.get((*job, target), 0) <= now_s and not any(
            success.until_s > now_s
            and build_serves(success.built_on, "success", success.wheel_tags, target)
            for success in self.served.get(job, ()))

    def _available(self, job: Job, target: Target, now_s: float) -> bool:
        """:meth:`_wanted`; a job left out because it is being built is noted as
        held back for *target*, to be offered again when that build ends."""
        if job in self.active:
            self.held_back.hold(job, target)
            return False
        return self._wanted(job, target, now_s)

    @staticmethod
    def _tags(files: list[dict]) -> list[tuple[str, str, str]]:
        return [(f["py_tag"], f["abi_tag"], f["platform_tag"]) for f in files]

    def _build_ended(self, job: Job, target: Target, status: Optional[str], files: list[dict],
                     now_s: float) -> list[Target]:
        """Put *job* back at the head of the queues of the targets that waited for
        it (less those its wheels serve): at once, not at the next
        recalculation.  The targets with something new to hand out."""
        tags = self._tags(files)
        waiting = self.held_back.release(job)
        for waiting_target in waiting:
            if not build_serves(target, status or "", tags, waiting_target) \
                    and self._wanted(job, waiting_target, now_s):
                self.queues.setdefault(waiting_target, JobQueue()).restore([job])
        return sorted(waiting | {target})
