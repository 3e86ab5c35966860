"""The data layer's reading part: whole projects as the pages show them, the
index as a whole, and the statistics.

A mixin of :class:`piwheels.db.Database` (it uses its tables, transactions and
queue queries); kept apart so each module keeps one concern.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from .db_files import file_data, file_data_columns
from .names import canonical_name, version_key
from .project_status import ACTIVE, QUARANTINED
from .records import BuildData, FileData, ProjectData, VersionData
from .smoke import SmokeResult
from .tags import Target

#: Pending builds are counted up to this many per ABI (the count is for display).
PENDING_COUNT_LIMIT = 10_000


class IndexReads:
    """Reads of projects and of the whole index (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    # --- the index as a whole -----------------------------------------------

    def all_packages(self) -> list[str]:
        packages = self.t["packages"]
        with self._begin() as conn:
            return list(conn.scalars(sa.select(packages.c.package).order_by(packages.c.package)))

    def packages_with_files(self) -> dict[str, str]:
        """{package: description} of every project with at least one published wheel
        that is served (a quarantined project's are not)."""
        t = self.t
        query = (
            sa.select(t["packages"].c.package, t["packages"].c.description)
            .where(~is_withheld(t["packages"]))
            .where(sa.exists().where(
                (t["builds"].c.package == t["packages"].c.package)
                & (t["builds"].c.status == "success")))
            .order_by(t["packages"].c.package)
        )
        with self._begin() as conn:
            return dict(conn.execute(query).all())

    def statistics(self) -> dict:
        """Counts for the home page and the monitor."""
        t = self.t
        hour_ago = sa.func.now() - sa.text("interval '1 hour'")
        with self._begin() as conn:
            stats = {
                "packages": conn.scalar(sa.select(sa.func.count()).select_from(t["packages"])),
                "versions": conn.scalar(sa.select(sa.func.count()).select_from(t["versions"])),
                "files": conn.scalar(sa.select(sa.func.count()).select_from(t["files"])),
                "packages_built": conn.scalar(
                    sa.select(sa.func.count(sa.distinct(t["builds"].c.package)))
                    .where(t["builds"].c.status == "success")),
                "builds_last_hour": conn.scalar(
                    sa.select(sa.func.count()).select_from(t["builds"])
                    .where(t["builds"].c.started > hour_ago)),
            }
        stats["pending"] = {
            str(target): len(self.pending_builds(target, PENDING_COUNT_LIMIT))
            for target in self.get_build_targets()
        }
        return stats

    def build_statistics(self) -> dict:
        """Builds in the last hour per target, their success rate, and pending per
        target (keyed by ``str(target)``: "cp311 linux_aarch64")."""
        builds = self.t["builds"]
        hour_ago = sa.func.now() - sa.text("interval '1 hour'")
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(builds.c.abi_tag, builds.c.platform_tag, builds.c.status,
                          sa.func.count())
                .where(builds.c.started > hour_ago)
                .group_by(builds.c.abi_tag, builds.c.platform_tag, builds.c.status)
            ).all()
        per_target: dict[str, int] = defaultdict(int)
        succeeded = 0
        for abi, platform, status, count in rows:
            per_target[str(Target(abi, platform))] += count
            succeeded += count if status == "success" else 0
        total = sum(per_target.values())
        return {
            "builds_last_hour": dict(per_target),
            "success_rate": round(succeeded / total, 3) if total else None,
            "pending": {str(target): len(self.pending_builds(target, PENDING_COUNT_LIMIT))
                        for target in self.get_build_targets()},
        }

    def unbuilt_failure_counts(self) -> list[tuple]:
        """The failures page's rows, counted here rather than in Python (on a large
        farm there are millions): the releases x active targets that no wheel
        serves and whose latest attempt there failed or was rejected, as
        (package, cause, cause_package, how many, one of their cause details);
        releases that are skipped, yanked, left out by the build policy or
        withheld are not counted."""
        t = self.t
        p, v, b, f, a = (t[name] for name in (
            "packages", "versions", "builds", "files", "build_targets"))
        latest = (
            sa.select(b.c.package, b.c.version, b.c.abi_tag, b.c.platform_tag, b.c.cause,
                      b.c.cause_detail, b.c.cause_package)
            .where(b.c.status != "success")
            .ext(distinct_on(b.c.package, b.c.version, b.c.abi_tag, b.c.platform_tag))
            .order_by(b.c.package, b.c.version, b.c.abi_tag, b.c.platform_tag,
                      b.c.build_id.desc())
        ).subquery("latest")
        won = b.alias("won")
        served_here = sa.exists().where(
            (won.c.package == latest.c.package) & (won.c.version == latest.c.version)
            & (won.c.abi_tag == latest.c.abi_tag) & (won.c.platform_tag == latest.c.platform_tag)
            & (won.c.status == "success"))
        served_by_any = sa.exists().select_from(f.join(won, f.c.build_id == won.c.build_id)).where(
            (won.c.package == latest.c.package) & (won.c.version == latest.c.version)
            & sa.func.wheel_serves(f.c.py_version_tag, f.c.abi_tag, f.c.platform_tag,
                                   latest.c.abi_tag, latest.c.platform_tag))
        query = (
            sa.select(*latest.c)
            .join(a, (a.c.abi_tag == latest.c.abi_tag)
                  & (a.c.platform_tag == latest.c.platform_tag) & a.c.active)
            .join(v, (v.c.package == latest.c.package) & (v.c.version == latest.c.version))
            .join(p, p.c.package == latest.c.package)
            .where(~v.c.yanked, v.c.skip_reason.is_(None), v.c.policy_reason.is_(None),
                   p.c.skip_reason.is_(None), ~is_withheld(p), ~served_here, ~served_by_any)
        )
        unbuilt = query.subquery("unbuilt")
        counted = (
            sa.select(unbuilt.c.package, unbuilt.c.cause, unbuilt.c.cause_package,
                      sa.func.count(), sa.func.min(unbuilt.c.cause_detail))
            .group_by(unbuilt.c.package, unbuilt.c.cause, unbuilt.c.cause_package)
            # in one order, so an unchanged page is written the same (and not again)
            .order_by(unbuilt.c.package, unbuilt.c.cause, unbuilt.c.cause_package)
        )
        with self._begin() as conn:
            return [tuple(row) for row in conn.execute(counted)]

    # --- reading a project --------------------------------------------------

    def get_project(self, package: str) -> Optional[ProjectData]:
        """Everything known of one project (None if unknown), newest version first."""
        package = canonical_name(package)
        return self.get_projects([package]).get(package)

    def get_projects(self, packages: Iterable[str]) -> dict[str, ProjectData]:
        """:meth:`get_project` for many projects in one transaction and a few queries
        (the index writer rewrites projects in batches); unknown ones are left out."""
        wanted = sorted({canonical_name(package) for package in packages})
        if not wanted:
            return {}
        t = self.t
        p, n, v, b, f, d, s, k = (t[name] for name in (
            "packages", "package_names", "versions", "builds", "files", "dependencies",
            "smoke_tests", "build_skips"))
        of_wanted = b.c.package.in_(wanted)
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(p.c.package, p.c.description, p.c.skip_reason,
                          p.c.upstream_status, p.c.upstream_status_reason,
                          p.c.operator_status, p.c.operator_status_reason)
                .where(p.c.package.in_(wanted))
            ).all()
            name_rows = conn.execute(
                sa.select(n.c.package, n.c.name).where(n.c.package.in_(wanted))
                .order_by(n.c.name)
            ).all()
            version_rows = conn.execute(
                sa.select(v.c.package, v.c.version, v.c.released, v.c.has_sdist, v.c.yanked,
                          v.c.yank_reason, v.c.skip_reason, v.c.policy_reason)
                .where(v.c.package.in_(wanted))
            ).all()
            build_rows = conn.execute(
                sa.select(b.c.build_id, b.c.package, b.c.version, b.c.abi_tag, b.c.platform_tag,
                          b.c.slave_label, b.c.builder, b.c.started, b.c.duration, b.c.status,
                          b.c.reason, b.c.cause, b.c.cause_detail, b.c.cause_package, b.c.image,
                          b.c.os_release)
                .where(of_wanted).order_by(b.c.build_id)
            ).all()
            image_rows = conn.execute(sa.select(
                t["builder_images"].c.abi_tag, t["builder_images"].c.platform_tag,
                t["builder_images"].c.image, t["builder_images"].c.first_seen)).all()
            file_rows = conn.execute(
                sa.select(f.c.build_id, *file_data_columns(f))
                .join(b, f.c.build_id == b.c.build_id)
                .where(of_wanted).order_by(f.c.filename)
            ).all()
            smoke_rows = conn.execute(
                sa.select(s.c.filename, s.c.status, s.c.detail, s.c.package)
                .join(f, s.c.filename == f.c.filename)
                .join(b, f.c.build_id == b.c.build_id)
                .where(of_wanted)
            ).all()
            skip_rows = conn.execute(
                sa.select(k.c.package, k.c.version, k.c.abi_tag, k.c.platform_tag, k.c.cause,
                          k.c.detail)
                .where(k.c.package.in_(wanted))
            ).all()
            dep_rows = conn.execute(
                sa.select(d.c.filename, d.c.tool, d.c.dependency)
                .join(f, d.c.filename == f.c.filename)
                .join(b, f.c.build_id == b.c.build_id)
                .where(of_wanted).order_by(d.c.dependency)
            ).all()
        names: dict[str, list[str]] = defaultdict(list)
        for package, name in name_rows:
            names[package].append(name)
        deps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for filename, tool, dependency in dep_rows:
            deps[filename][tool].append(dependency)
        smoke = {row.filename: SmokeResult(*row) for row in smoke_rows}
        files_by_build: dict[int, list[FileData]] = defaultdict(list)
        for row in file_rows:
            found = deps.get(row.filename)
            files_by_build[row.build_id].append(file_data(
                row, {tool: tuple(names) for tool, names in found.items()} if found else {},
                smoke.get(row.filename)))
        builds_by_version: dict[tuple[str, str], list[BuildData]] = defaultdict(list)
        for row in build_rows:
            builds_by_version[row.package, row.version].append(BuildData(
                build_id=row.build_id, abi_tag=row.abi_tag, platform_tag=row.platform_tag,
                slave_label=row.slave_label, os_release=row.os_release,
                builder=row.builder, started=row.started, duration=row.duration,
                status=row.status, reason=row.reason,
                files=tuple(files_by_build.get(row.build_id, ())),
                cause=row.cause, cause_detail=row.cause_detail, cause_package=row.cause_package,
                image=row.image,
            ))
        images: dict[Target, dict[str, datetime]] = defaultdict(dict)
        for abi_tag, platform_tag, image, first_seen in image_rows:
            images[Target(abi_tag, platform_tag)][image] = first_seen
        skips: dict[tuple[str, str], dict[Target, tuple[str, str]]] = defaultdict(dict)
        for package, version, abi_tag, platform_tag, cause, detail in skip_rows:
            skips[package, version][Target(abi_tag, platform_tag)] = (cause, detail)
        versions_by_package: dict[str, list[VersionData]] = defaultdict(list)
        for (package, version, released, has_sdist, yanked, yank_reason,
             skip_reason, policy_reason) in version_rows:
            versions_by_package[package].append(VersionData(
                version=version, released=released, has_sdist=has_sdist, yanked=yanked,
                yank_reason=yank_reason, skip_reason=skip_reason,
                builds=tuple(builds_by_version.get((package, version), ())),
                policy_reason=policy_reason, skips=skips.get((package, version), {}),
            ))
        projects = {}
        for row in rows:
            package = row.package
            versions = versions_by_package.get(package, [])
            versions.sort(key=lambda v: version_key(v.version), reverse=True)
            projects[package] = ProjectData(
                package=package, description=row.description, skip_reason=row.skip_reason,
                names=tuple(names.get(package, ())), versions=tuple(versions),
                upstream_status=row.upstream_status,
                upstream_status_reason=row.upstream_status_reason,
                operator_status=row.operator_status,
                operator_status_reason=row.operator_status_reason, images=dict(images),
            )
        return projects


def is_withheld(packages: sa.Table) -> sa.ColumnElement:
    """Whether a project is quarantined, by upstream or by an operator (PEP 792)."""
    return (packages.c.upstream_status == QUARANTINED) | (
        sa.func.coalesce(packages.c.operator_status, ACTIVE) == QUARANTINED)
