"""build_recorder: publishes a finished build's verified wheels and records the attempt.

What it records and publishes of each wheel (its row, the hashes the simple
pages list, its ``.metadata`` file) are the facts the file receiver computed
from the file it received, never what the builder claimed in BUILT: the slave
driver hands over the receiver's VERIFIED facts, in which only the apt
dependencies are the builder's word.

The slave driver hands over each finished attempt and moves on; this task
does the slow part (the database transaction, the renames) off its path.  A
build's files are published only together with its database record, in this
order: the verified files are staged (beside them, their core metadata), the
rows are committed, and only then are the files renamed into the index.  A
file left in the index by a crash has no row, so it never blocks a later
attempt (it is replaced); a row whose file could not be put in place has its
build deleted, so the queue builds it again.  An attempt whose files cannot
be staged for want of space (a full disk) is not recorded at all: its files
are dropped, the reason is logged (rate-limited), and the queue hands the
release out again, to be built once there is room.  A lost database connection
stops the master (the staged files are cleared at the next start, and a
commit that did go through has its rows reconciled with the disk then).
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import zmq

from .. import limits
from ..connection import first_line
from ..db_upstream import collision_reason, same_bytes
from ..diagnosis import detail_line, diagnose
from ..errors import DataRefused, InvalidName
from ..names import canonical_name
from ..protocols import INDEX_REQUESTS, RECORD_REQUESTS, WheelFacts
from ..records import BuildRecord
from ..smoke import FAILED, SMOKE_CAUSE, SmokeResult
from ..storage import OutputTree, StagedWheel
from ..tags import Target
from ..transport import ProtocolError
from ..upstream_wheels import UPSTREAM_WHEEL
from .db_task import DatabaseTask
from .task import Clock

#: The most attempts written in one transaction.
MAX_BATCH = 500
#: The errors that say the disk (or the master's quota) is full: the attempt is built again.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

log = logging.getLogger("piwheels.master.build_recorder")


class BuildRecorder(DatabaseTask):
    name = "build_recorder"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path,
                 clock: Clock = time.monotonic, smoke_policy: str = "warn") -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.tree = OutputTree(output_path)
        #: what becomes of a wheel whose smoke test failed (``--smoke-policy``)
        self.smoke_policy = smoke_policy
        self.recorded = 0
        self.requests = self.socket(zmq.PULL, RECORD_REQUESTS.reverse())
        self.requests.bind(RECORD_REQUESTS.address)
        self.register(self.requests, self.handle_record)
        self.index_requests = self.socket(zmq.PUSH, INDEX_REQUESTS)
        self.index_requests.connect(INDEX_REQUESTS.address)

    def on_stop(self) -> None:
        """Record what the slave driver (stopped before us) already handed over."""
        if self.db is not None:
            while self.requests.zsocket.poll(0):
                self.handle_record()

    def handle_record(self) -> None:
        """Record every attempt waiting (up to a batch) in one transaction."""
        jobs, skips = [], []
        while len(jobs) + len(skips) < MAX_BATCH:
            try:
                name, job = self.requests.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            except ProtocolError as exc:
                self.log.error("dropped a bad record request: %s", exc)
                continue
            (skips if name == "SKIP" else jobs).append(job)
        if skips:
            self.record_skips(skips)
        if not jobs:
            return
        started = time.perf_counter()
        # a quarantined project's wheels go straight where nothing is served
        withheld = self.db.withheld_packages(_valid_names(job["package"] for job in jobs))
        filenames = [facts["filename"] for job in jobs for facts in job["files"]]
        recorded = self.db.recorded_filenames(filenames)
        upstream = self.db.upstream_hashes(filenames)
        prepared = [p for p in (self.prepare(job, withheld, recorded, upstream) for job in jobs)
                    if p is not None]
        try:
            build_ids = self.db.record_builds(
                [record for record, _ in prepared]) if prepared else []
            self.log.debug("recorded %d attempts in %.0f ms", len(prepared),
                           (time.perf_counter() - started) * 1000)
        except DataRefused as exc:
            self.log.warning("batch of %d records failed (%s); recording one by one",
                             len(prepared), exc.__class__.__name__)
            build_ids = [self.record_one(record, staged) for record, staged in prepared]
        for build_id, (record, staged) in zip(build_ids, prepared):
            if build_id is not None:
                self.put_in_place(build_id, record, staged)
        self.recorded += len(prepared)
        # A recorded attempt only ever shortens the build queue, and the slave
        # driver already skips what it has just seen finish: no queue refresh.
        for package in {canonical_name(job["package"]) for job in jobs}:
            self.tell(self.index_requests, "PACKAGE", {"package": package})

    def record_skips(self, skips: list[dict]) -> None:
        """Store the driver's skip verdicts; their projects' pages show them."""
        try:
            with self.db.transaction():
                added = self.db.record_skips(skips)
        except (DataRefused, InvalidName) as exc:
            self.log.error("could not record %d build skips: %s", len(skips), first_line(exc))
            return
        self.log.debug("recorded %d new build skips", added)
        for package in _valid_names(skip["package"] for skip in skips):
            self.tell(self.index_requests, "PACKAGE", {"package": package})

    def prepare(self, job: dict, withheld: frozenset[str] | set[str] = frozenset(),
                recorded: frozenset[str] | set[str] = frozenset(),
                upstream: Optional[dict[str, Optional[str]]] = None,
                ) -> Optional[tuple[BuildRecord, list[StagedWheel]]]:
        """Stage a successful attempt's files (for the withheld directory, for a
        package in *withheld*); an attempt whose files cannot be staged, one of
        whose files is in *recorded* already, or one with a file whose name
        upstream serves (*upstream*: {filename: sha256}) with other bytes,
        becomes a rejected one, except one refused for want of space: None,
        nothing recorded, so it is built again."""
        package = canonical_name(job["package"])
        upstream = upstream or {}
        clash = next((f for f in job["files"] if f["filename"] in upstream
                      and not same_bytes(f["sha256"], upstream[f["filename"]])), None)
        if clash is not None:
            # a client would meet two files of one name: the farm's never reaches the index
            reason = collision_reason(clash["filename"], upstream[clash["filename"]])
            self.log.warning("rejected %s %s for %s: %s", job["package"], job["version"],
                             job_target(job), reason)
            self.discard_received(job)
            self.db.record_skips([{**job, "cause": UPSTREAM_WHEEL, "detail": reason}])
            return build_record({**job, "status": "rejected", "reason": reason}, ()), []
        staged: list[StagedWheel] = []
        held = held_back(job, self.smoke_policy)
        if held is not None:
            self.log.warning("held back %s %s for %s: %s", job["package"], job["version"],
                             job_target(job), held.cause_detail)
            self.discard_received(job)
            return held, []
        try:
            files = []
            for received in job["files"]:
                facts = WheelFacts.from_dict(received)
                if facts.filename in recorded:
                    # never replace a published file (a duplicate pure wheel, say)
                    raise FileExistsError(f"{facts.filename} is already published")
                staged.append(self.tree.stage(
                    package, facts.filename, Path(received["path"]), facts.metadata,
                    withheld=package in withheld))
                files.append(facts)
            return build_record(job, tuple(files)), staged
        except OSError as exc:
            self.tree.discard(staged)
            self.discard_received(job)
            if exc.errno in NO_SPACE:
                self.log_limited("no space", logging.ERROR,
                                 "could not stage %s %s for %s (%s): not recorded, so it "
                                 "is built again", job["package"], job["version"],
                                 job_target(job), exc)
                return None
            self.log.error("could not publish %s %s: %s", job["package"], job["version"], exc)
            return build_record(
                {**job, "status": "rejected", "reason": f"could not publish: {exc}"[:limits.REASON]}, ()
            ), []

    def record_one(self, record: BuildRecord, staged: list[StagedWheel]) -> Optional[int]:
        """Record one attempt; if its rows are refused, record it as rejected (its
        files dropped) and return None: nothing of it is to be put in place."""
        try:
            return self.db.record_build(record)
        except DataRefused as exc:
            self.tree.discard(staged)
            self.log.error("could not record %s %s for %s: %s", record.package, record.version,
                           record.target, first_line(exc))
            reason = f"could not record: {first_line(exc)}"[:limits.REASON]
            self.db.record_build(replace(
                record, status="rejected", files=(), reason=reason,
                cause="bad-wheel", cause_detail=detail_line(reason), cause_package=None))
            return None

    def put_in_place(self, build_id: int, record: BuildRecord,
                     staged: list[StagedWheel]) -> None:
        """Rename a committed attempt's files into the index.  If that fails, the
        attempt is deleted again, so the build queue hands the release out anew."""
        try:
            for item in staged:
                self.tree.put_in_place(item)
        except OSError as exc:
            self.log.error("could not put %s %s for %s in place (%s); deleted build %d, "
                           "so it is built again", record.package, record.version,
                           record.target, exc, build_id)
            self.db.requeue_builds([build_id])
            for item in staged:
                self.tree.unpublish(item.package, item.filename)
            self.tree.discard(staged)

    def discard_received(self, job: dict) -> None:
        for facts in job["files"]:
            self.tree.discard_received(Path(facts["path"]))

    def status(self) -> dict:
        return {"recorded": self.recorded}


def _valid_names(names) -> set[str]:
    """The canonical forms of the valid names among *names* (a bad one is refused later)."""
    valid = set()
    for name in names:
        try:
            valid.add(canonical_name(name))
        except InvalidName:
            pass
    return valid


def job_target(job: dict) -> Target:
    """The target a finished job was built for (what the log lines name)."""
    return Target(job["abi_tag"], job["platform_tag"])


def build_record(job: dict, files: tuple[WheelFacts, ...]) -> BuildRecord:
    cause = attempt_cause(job)
    return BuildRecord(
        package=job["package"], version=job["version"], abi_tag=job["abi_tag"],
        platform_tag=job["platform_tag"], os_release=job.get("os_release"),
        slave_label=job["slave_label"], builder=job["builder"],
        started=datetime.fromtimestamp(job["started"], tz=timezone.utc),
        duration=timedelta(seconds=job["duration_s"]), status=job["status"],
        reason=job["reason"], log=job["log"], files=files, image=job.get("image"),
        cause=cause.cause if cause else None, cause_detail=cause.detail if cause else None,
        cause_package=cause.package if cause else None,
        smoke=tuple(smoke_results(job)) if files else (),
    )


def held_back(job: dict, policy: str) -> Optional[BuildRecord]:
    """The record of a successful attempt that ``--smoke-policy hold`` keeps from
    the index (a wheel of it failed its smoke test): failed, cause smoke-import,
    no files; None if it is published (``warn``, or no wheel failed: an
    ``incomplete`` one, which lacks only its Python dependencies, is published)."""
    failed = [s for s in smoke_results(job) if s.status == FAILED]
    if policy != "hold" or job["status"] != "success" or not failed:
        return None
    first = failed[0]
    detail = first.detail or "the import failed"
    return replace(build_record(
        {**job, "status": "failed",
         "reason": f"held back (--smoke-policy hold): {first.filename} failed its "
                   f"smoke test: {detail}"[:limits.REASON]}, ()),
        cause=SMOKE_CAUSE, cause_detail=detail[:limits.CAUSE_DETAIL],
        cause_package=first.package)


def smoke_results(job: dict) -> list[SmokeResult]:
    """The builder's smoke tests of a RECORD's wheels (none: not tested)."""
    return [SmokeResult.from_dict(s) for s in job.get("smoke") or ()]


@dataclass(frozen=True)
class AttemptCause:
    """What builds.cause, cause_detail and cause_package record of one attempt."""

    cause: str
    detail: str
    package: Optional[str] = None


def attempt_cause(job: dict) -> Optional[AttemptCause]:
    """The cause of an unsuccessful attempt, as the master finds it (None: it succeeded).

    The master diagnoses the log itself; the builder's package (its apt lookup,
    which the master cannot repeat) is kept only when the builder's cause and
    detail are the master's too: the log and the lookup are the builder's claims.
    """
    if job["status"] == "success":
        return None
    if job["status"] == "rejected":
        return AttemptCause("bad-wheel", detail_line(job["reason"] or "refused by the master"))
    found = diagnose(job["log"], job["reason"] or "")
    claimed = job.get("claimed_diagnosis")
    package = None
    if claimed is not None and claimed["package"] is not None:
        if (claimed["cause"], claimed["detail"]) == (found.cause, found.detail) \
                and found.wanted is not None:
            package = claimed["package"]
        else:
            log.info("%s %s for %s: the builder %s claims %s (%s, install %s), the log says "
                     "%s (%s): its package is not kept", job["package"], job["version"],
                     job_target(job), job["builder"], claimed["cause"], claimed["detail"][:80],
                     claimed["package"], found.cause, found.detail[:80])
    return AttemptCause(found.cause, found.detail, package)
