"""The slave driver's skip verdicts: releases a slave need not build.

build_queue sends with each queued build its Requires-Python and the wheels
upstream serves for it; this keeps those facts while the build waits, and
when the driver is about to hand the build to a slave, decides with
:func:`piwheels.upstream_wheels.skip_verdict` against that slave's own Python
version and accepted platforms (from its HELLO).  A skipped build is never
sent: the driver tells the build recorder (which stores it in build_skips)
and gives the slave the next build at once, so a skip costs no builder time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from packaging.tags import Tag

from ..upstream_wheels import Builder, Skip, accepted_tags, skip_verdict
from .job_queue import Job
from .slave_state import SlaveState


class SkipVerdicts:
    """What upstream says of each queued release, and the verdict for a slave."""

    def __init__(self) -> None:
        #: (package, version) -> (Requires-Python, upstream wheel filenames); only
        #: releases upstream says something of
        self.facts: dict[Job, tuple[Optional[str], tuple[str, ...]]] = {}
        self._accepted: dict[Builder, frozenset[Tag]] = {}

    def learn(self, builds: Iterable[dict]) -> None:
        """Keep the facts of a queue page's builds (the latest page wins)."""
        for build in builds:
            job = (build["package"], build["version"])
            if build["requires_python"] or build["upstream_wheels"]:
                self.facts[job] = (build["requires_python"], tuple(build["upstream_wheels"]))
            else:
                self.facts.pop(job, None)

    def keep_only(self, queued: Callable[[Job], bool]) -> None:
        """Forget the facts of builds no queue holds any more."""
        self.facts = {job: facts for job, facts in self.facts.items() if queued(job)}

    def verdict(self, job: Job, slave: SlaveState) -> Optional[Skip]:
        """Why *slave* need not build *job* (None: it must, or nothing is known)."""
        facts = self.facts.get(job)
        if facts is None:
            return None
        builder = Builder(slave.python_tag, slave.abi_tag, slave.python_version,
                          slave.platforms)
        accepted = self._accepted.get(builder)
        if accepted is None:
            accepted = self._accepted[builder] = accepted_tags(builder)
        return skip_verdict(builder, accepted, *facts)
