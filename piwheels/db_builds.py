"""The data layer's attempts part: recording builds with their files, their
logs, the failures and their retries, and the file rows the output tree's
reconciliation checks.

A mixin of :class:`piwheels.db.Database` (it uses its tables and transactions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, NamedTuple, Optional

import sqlalchemy as sa

from .db_files import FILE_COLUMNS, dependency_rows, file_row
from .db_releases import of_releases, release_table
from .names import canonical_name, normal_version
from .records import BuildRecord


class RecordedFile(NamedTuple):
    """A file row and the attempt it belongs to."""

    filename: str
    size: int
    build_id: int
    package: str
    version: str
    abi_tag: str
    platform_tag: str


class BuildData:
    """Attempts, their logs and files (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    # --- builds -------------------------------------------------------------

    def record_build(self, build: BuildRecord) -> int:
        """Store one attempt with its log, files and their dependencies; returns its id.

        All or nothing: the attempt and every file land in one transaction.
        """
        return self.record_builds([build])[0]

    def record_builds(self, builds: list[BuildRecord]) -> list[int]:
        """Store several attempts in one transaction (the recorder batches bursts)."""
        t_builds, logs = self.t["builds"], self.t["build_logs"]
        files, deps = self.t["files"], self.t["dependencies"]
        with self._begin() as conn:
            build_ids = list(conn.scalars(
                t_builds.insert().returning(t_builds.c.build_id, sort_by_parameter_order=True),
                [
                    dict(
                        package=canonical_name(b.package), version=normal_version(b.version),
                        abi_tag=b.abi_tag, platform_tag=b.platform_tag,
                        os_release=b.os_release or None, slave_label=b.slave_label,
                        builder=b.builder or b.slave_label, started=b.started,
                        duration=b.duration, status=b.status, reason=b.reason,
                        image=b.image, cause=b.cause, cause_detail=b.cause_detail,
                        cause_package=b.cause_package,
                    )
                    for b in builds
                ],
            ))
            conn.execute(logs.insert(), [
                dict(build_id=build_id, log=b.log) for build_id, b in zip(build_ids, builds)
            ])
            file_rows = [file_row(f, build_id)
                         for build_id, b in zip(build_ids, builds) for f in b.files]
            if file_rows:
                conn.execute(files.insert(), file_rows)
            dep_rows = [row for b in builds for f in b.files for row in dependency_rows(f)]
            if dep_rows:
                conn.execute(deps.insert(), dep_rows)
            smoke_rows = [s.to_dict() for b in builds for s in b.smoke
                          if s.filename in {f.filename for f in b.files}]
            if smoke_rows:
                conn.execute(self.t["smoke_tests"].insert(), smoke_rows)
        return build_ids

    # --- failures and their retries (issue 13) ----------------------------------

    def retry_holds(self, target: tuple[str, str], jobs: Iterable[tuple[str, str]]
                    ) -> dict[tuple[str, str], tuple[str, datetime]]:
        """For the releases among *jobs* that failed once for *target* and wait for
        their retry: {(package, version): (the builder that failed it, when that
        attempt ended)}.  The slave driver keeps that builder off it for a while."""
        wanted = sorted(set(jobs))
        if not wanted:
            return {}
        b, w = self.t["builds"], release_table(wanted)
        query = (sa.select(b.c.package, b.c.version, b.c.builder, b.c.started + b.c.duration)
                 .select_from(w).join(b, of_releases(b, w))
                 .where(b.c.abi_tag == target[0], b.c.platform_tag == target[1],
                        b.c.status != "success")
                 .order_by(b.c.build_id))
        with self._begin() as conn:
            return {(package, version): (builder, ended)
                    for package, version, builder, ended in conn.execute(query)}

    def failures(self, package: Optional[str] = None, limit: int = 100) -> list[dict]:
        """The latest unsuccessful attempts (of one project, or all), newest first:
        who made each, and its ``outcome`` for the release on that target: still
        ``retrying``, failed for good (``counts``: its failures settle it, see
        ``failures_settle``), or ``built since`` (or re-opened by a new image)."""
        b = self.t["builds"]
        key = (b.c.package, b.c.version, b.c.abi_tag, b.c.platform_tag)
        query = (sa.select(b.c.build_id, b.c.package, b.c.version, b.c.abi_tag,
                           b.c.platform_tag, b.c.builder,
                           b.c.slave_label, b.c.started, b.c.status, b.c.reason,
                           sa.func.needs_build(*key).label("retrying"),
                           sa.func.failures_settle(*key).label("settled"))
                 .where(b.c.status != "success")
                 .order_by(b.c.build_id.desc()).limit(limit))
        if package is not None:
            query = query.where(b.c.package == canonical_name(package))
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return [{
            "build_id": row.build_id, "package": row.package, "version": row.version,
            "abi_tag": row.abi_tag, "platform_tag": row.platform_tag, "builder": row.builder, "slave_label": row.slave_label,
            "started": row.started, "status": row.status, "reason": row.reason,
            "outcome": "retrying" if row.retrying else "counts" if row.settled else "built since",
        } for row in rows]

    # --- the output tree's reconciliation (issue 12) ----------------------------

    def recorded_filenames(self, filenames: Iterable[str]) -> set[str]:
        """Which of *filenames* already have a row (a published wheel)."""
        names = sorted(set(filenames))
        if not names:
            return set()
        files = self.t["files"]
        with self._begin() as conn:
            return set(conn.scalars(sa.select(files.c.filename)
                                    .where(files.c.filename.in_(names))))

    def recorded_files(self) -> list[RecordedFile]:
        """Every file row with what the output tree must hold for it."""
        files, builds = self.t["files"], self.t["builds"]
        query = (sa.select(files.c.filename, files.c[FILE_COLUMNS["size"]], builds.c.build_id,
                           builds.c.package, builds.c.version, builds.c.abi_tag,
                           builds.c.platform_tag)
                 .join(builds, files.c.build_id == builds.c.build_id))
        with self._begin() as conn:
            return [RecordedFile(*row) for row in conn.execute(query)]

    def requeue_builds(self, build_ids: Iterable[int]) -> int:
        """Delete these attempts (with their files' rows), so the queue hands their
        releases out again; how many went."""
        ids = sorted(set(build_ids))
        if not ids:
            return 0
        builds = self.t["builds"]
        with self._begin() as conn:
            return conn.execute(builds.delete().where(builds.c.build_id.in_(ids))).rowcount

    def get_build_log(self, build_id: int) -> Optional[str]:
        logs = self.t["build_logs"]
        with self._begin() as conn:
            return conn.scalar(sa.select(logs.c.log).where(logs.c.build_id == build_id))

    def get_build_logs(self, build_ids: Iterable[int]) -> dict[int, str]:
        """{build id: log} of several attempts at once (ids without a log are left out)."""
        wanted = sorted(set(build_ids))
        if not wanted:
            return {}
        logs = self.t["build_logs"]
        with self._begin() as conn:
            return dict(conn.execute(
                sa.select(logs.c.build_id, logs.c.log).where(logs.c.build_id.in_(wanted))
            ).all())
