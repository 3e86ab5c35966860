"""build_recorder: publishes a finished build's verified wheels and records the attempt.

The slave driver hands over each finished attempt and moves on; this task
does the slow part (file moves, the database transaction) off its path.  A
build's files are published only together with its database record: if the
record cannot be written, the files are taken back out of the index.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import zmq

from .. import limits
from ..connection import first_line
from ..db import Database
from ..errors import DatabaseUnavailable, DataRefused, InvalidName, PiwheelsError
from ..names import canonical_name
from ..protocols import INDEX_REQUESTS, RECORD_REQUESTS
from ..records import BuildRecord, FileRecord
from ..transport import ProtocolError
from ..storage import WITHHELD_DIR, atomic_move, atomic_write, remove_quietly
from .task import Clock, Task

#: The most attempts written in one transaction.
MAX_BATCH = 500


class BuildRecorder(Task):
    name = "build_recorder"

    def __init__(self, ctx: zmq.Context, *, dsn: str, output_path: Path,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.dsn = dsn
        self.simple_dir = Path(output_path) / "simple"
        self.withheld_dir = Path(output_path) / WITHHELD_DIR
        self.db: Optional[Database] = None
        self.recorded = 0
        self.requests = self.socket(zmq.PULL, RECORD_REQUESTS.reverse())
        self.requests.bind(RECORD_REQUESTS.address)
        self.register(self.requests, self.handle_record)
        self.index_requests = self.socket(zmq.PUSH, INDEX_REQUESTS)
        self.index_requests.connect(INDEX_REQUESTS.address)

    def on_start(self) -> None:
        self.db = Database(self.dsn)

    def on_stop(self) -> None:
        """Record what the slave driver (stopped before us) already handed over."""
        if self.db is not None:
            try:
                while self.requests.zsocket.poll(0):
                    self.handle_record()
            finally:
                self.db.close()

    def handle_record(self) -> None:
        """Record every attempt waiting (up to a batch) in one transaction."""
        jobs = []
        while len(jobs) < MAX_BATCH:
            try:
                _, job = self.requests.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            except ProtocolError as exc:
                self.log.error("dropped a bad record request: %s", exc)
                continue
            jobs.append(job)
        if not jobs:
            return
        started = time.perf_counter()
        # a quarantined project's wheels go straight where nothing is served
        withheld = self.db.withheld_packages(_valid_names(job["package"] for job in jobs))
        prepared = [self.prepare(job, withheld) for job in jobs]
        try:
            try:
                self.db.record_builds([record for record, _ in prepared])
                self.log.debug("recorded %d attempts in %.0f ms", len(prepared),
                               (time.perf_counter() - started) * 1000)
            except DataRefused as exc:
                self.log.warning("batch of %d records failed (%s); recording one by one",
                                 len(prepared), exc.__class__.__name__)
                for record, published in prepared:
                    self.record_one(record, published)
        except DatabaseUnavailable:
            self.unpublish_unrecorded(prepared, jobs)
            raise
        self.recorded += len(prepared)
        # A recorded attempt only ever shortens the build queue, and the slave
        # driver already skips what it has just seen finish: no queue refresh.
        for package in {canonical_name(job["package"]) for job in jobs}:
            self.tell(self.index_requests, "PACKAGE", {"package": package})

    def prepare(self, job: dict, withheld: frozenset[str] | set[str] = frozenset()
                ) -> tuple[BuildRecord, list[Path]]:
        """Publish a successful attempt's files (into the withheld directory for a
        package in *withheld*); an attempt whose files cannot be published becomes
        a rejected one."""
        package = canonical_name(job["package"])
        root = self.withheld_dir if package in withheld else self.simple_dir
        published: list[Path] = []
        try:
            files = []
            for facts in job["files"]:
                published += self.publish(package, facts, root)
                files.append(file_record(facts))
            return build_record(job, tuple(files)), published
        except OSError as exc:
            self.unpublish(job, published)
            self.log.error("could not publish %s %s: %s", job["package"], job["version"], exc)
            return build_record(
                {**job, "status": "rejected", "reason": f"could not publish: {exc}"[:limits.REASON]}, ()
            ), []

    def record_one(self, record: BuildRecord, published: list[Path]) -> None:
        try:
            self.db.record_build(record)
        except DataRefused as exc:
            for path in published:
                remove_quietly(path)
            self.log.error("could not record %s %s for %s: %s", record.package, record.version,
                           record.abi_tag, first_line(exc))
            self.db.record_build(replace(
                record, status="rejected", files=(),
                reason=f"could not record: {first_line(exc)}"[:limits.REASON]))

    def unpublish_unrecorded(self, prepared: list[tuple[BuildRecord, list[Path]]],
                             jobs: list[dict]) -> None:
        """The connection was lost while recording: take back the files whose rows
        were not written, or each would block its build for good ("already
        published") when the restarted master has it built again."""
        for (record, published), job in zip(prepared, jobs):
            if not published:
                continue
            try:
                project = self.db.get_project(record.package)  # a new connection, if one can be had
                recorded = {f.filename for v in (project.versions if project else ())
                            for b in v.builds for f in b.files}
                if any(f.filename in recorded for f in record.files):
                    continue  # the commit went through before the connection went
            except PiwheelsError:
                pass  # cannot tell: far likelier lost with the transaction than committed
            self.log.info("took back %s %s's files: it was not recorded",
                          record.package, record.version)
            self.unpublish(job, published)

    def unpublish(self, job: dict, published: list[Path]) -> None:
        for path in published:
            remove_quietly(path)
        for facts in job["files"]:
            remove_quietly(Path(facts["path"]))

    def status(self) -> dict:
        return {"recorded": self.recorded}

    def publish(self, package: str, facts: dict, root: Optional[Path] = None) -> list[Path]:
        """Move one verified wheel into the index (or *root*) beside its core metadata."""
        directory = (root or self.simple_dir) / package
        wheel = directory / facts["filename"]
        metadata = directory / (facts["filename"] + ".metadata")
        if wheel.exists():
            # never replace a published file (a duplicate pure wheel, say)
            raise FileExistsError(f"{facts['filename']} is already published")
        atomic_write(metadata, facts["metadata"])
        try:
            atomic_move(Path(facts["path"]), wheel)
        except OSError:
            remove_quietly(metadata)
            raise
        return [wheel, metadata]


def _valid_names(names) -> set[str]:
    """The canonical forms of the valid names among *names* (a bad one is refused later)."""
    valid = set()
    for name in names:
        try:
            valid.add(canonical_name(name))
        except InvalidName:
            pass
    return valid


def file_record(facts: dict) -> FileRecord:
    return FileRecord(
        filename=facts["filename"], size=facts["size"], sha256=facts["sha256"],
        package_tag=facts["package_tag"], version_tag=facts["version_tag"],
        py_tag=facts["py_tag"], abi_tag=facts["abi_tag"], platform_tag=facts["platform_tag"],
        requires_python=facts["requires_python"], metadata_sha256=facts["metadata_sha256"],
        dependencies={
            "apt": frozenset(facts["apt_dependencies"]),
            # the schema keeps requirements up to 255 characters
            "pip": frozenset(d for d in facts["requires_dist"] if len(d) <= 255),
        },
    )


def build_record(job: dict, files: tuple[FileRecord, ...]) -> BuildRecord:
    return BuildRecord(
        package=job["package"], version=job["version"], abi_tag=job["abi_tag"],
        slave_label=job["slave_label"],
        started=datetime.fromtimestamp(job["started"], tz=timezone.utc),
        duration=timedelta(seconds=job["duration_s"]), status=job["status"],
        reason=job["reason"], log=job["log"], files=files,
    )
