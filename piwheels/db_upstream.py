"""The data layer's upstream part: what upstream serves of each release, and the
releases the farm does not build because of it (``build_skips``).

A mixin of :class:`piwheels.db.Database` (it uses its tables and transactions).
The rules that decide a skip are :mod:`piwheels.upstream_wheels`; here they are
only stored, read back for the build queue, and acted on when upstream starts
serving a file the farm published with other bytes.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from . import limits
from .db_releases import of_releases, release_table
from .names import canonical_name, normal_version
from .protocols import MAX_UPSTREAM_WHEELS
from .upstream_wheels import UPSTREAM_WHEEL


class Withdrawn(NamedTuple):
    """A published file taken off the index: upstream serves its name with other bytes."""

    filename: str
    package: str
    version: str
    abi_tag: str
    platform_tag: str


def same_bytes(farm_sha256: str, upstream_sha256: Optional[str]) -> bool:
    """Whether upstream's file is the farm's: only a digest that matches says so."""
    return upstream_sha256 is not None and upstream_sha256 == farm_sha256


def collision_reason(filename: str, upstream_sha256: Optional[str]) -> str:
    """Why a wheel of this name is not published (the build's or the skip's reason)."""
    said = f"sha256 {upstream_sha256}" if upstream_sha256 else "no digest"
    return f"upstream serves {filename} with other bytes ({said})"[:limits.CAUSE_DETAIL]


class UpstreamData:
    """Upstream's files and the build skips (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    def set_upstream_files(self, package: str, version: str, requires_python: Optional[str],
                           wheels: Iterable[tuple[str, Optional[str]]]) -> list[Withdrawn]:
        """Make the release's Requires-Python and upstream wheels what upstream says.

        A wheel gone upstream undoes the release's ``upstream-wheel`` skips (the
        slave driver decides them again, at no builder's cost).  A file the farm
        published under a name upstream now serves with other bytes is
        withdrawn (:meth:`withdraw_files`); what was withdrawn is returned.
        """
        package, version = canonical_name(package), normal_version(version)
        wanted = dict(wheels)
        v, u, s = self.t["versions"], self.t["upstream_files"], self.t["build_skips"]
        with self._begin() as conn:
            conn.execute(v.update().where(
                v.c.package == package, v.c.version == version,
                v.c.requires_python.is_distinct_from(requires_python),
            ).values(requires_python=requires_python))
            stored = dict(conn.execute(sa.select(u.c.filename, u.c.filehash).where(
                u.c.package == package, u.c.version == version)).all())
            gone = stored.keys() - wanted.keys()
            if gone:
                conn.execute(u.delete().where(u.c.filename.in_(sorted(gone))))
                conn.execute(s.delete().where(s.c.package == package, s.c.version == version,
                                              s.c.cause == UPSTREAM_WHEEL))
            changed = {f: h for f, h in wanted.items() if f not in stored or stored[f] != h}
            if changed:
                insert = pg_insert(u)
                conn.execute(insert.on_conflict_do_update(
                    index_elements=[u.c.filename],
                    set_={"package": insert.excluded.package, "version": insert.excluded.version,
                          "filehash": insert.excluded.filehash}),
                    [{"filename": f, "package": package, "version": version, "filehash": h}
                     for f, h in sorted(changed.items())])
        return self.withdraw_files(changed) if changed else []

    def upstream_files_of(self, package: str) -> dict[str, dict[str, Optional[str]]]:
        """{version: {filename: sha256}}: the wheels upstream serves, as last recorded."""
        u = self.t["upstream_files"]
        found: dict[str, dict[str, Optional[str]]] = {}
        with self._begin() as conn:
            for version, filename, filehash in conn.execute(
                    sa.select(u.c.version, u.c.filename, u.c.filehash)
                    .where(u.c.package == canonical_name(package))):
                found.setdefault(version, {})[filename] = filehash
        return found

    def upstream_hashes(self, filenames: Iterable[str]) -> dict[str, Optional[str]]:
        """{filename: upstream's sha256 (None: it gave none)} for those upstream serves."""
        names = sorted(set(filenames))
        if not names:
            return {}
        u = self.t["upstream_files"]
        with self._begin() as conn:
            return dict(conn.execute(sa.select(u.c.filename, u.c.filehash)
                                     .where(u.c.filename.in_(names))).all())

    def withdraw_files(self, upstream: dict[str, Optional[str]]) -> list[Withdrawn]:
        """Take off the index every published file named in *upstream* ({filename:
        upstream's sha256}) whose bytes differ; its build then counts as served
        by upstream (an ``upstream-wheel`` skip for the build's target).

        Only rows change here, in one transaction: the index writer's next page
        no longer lists the file and removes it from disk, and a crash before
        that leaves a file without a row, which the start-up reconciliation
        moves out of the index.
        """
        f, b, s = self.t["files"], self.t["builds"], self.t["build_skips"]
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(f.c.filename, f.c.filehash, b.c.package, b.c.version, b.c.abi_tag,
                          b.c.platform_tag)
                .join(b, f.c.build_id == b.c.build_id)
                .where(f.c.filename.in_(sorted(upstream)))).all()
            withdrawn = [Withdrawn(row.filename, row.package, row.version, row.abi_tag,
                                   row.platform_tag)
                         for row in rows if not same_bytes(row.filehash, upstream[row.filename])]
            if not withdrawn:
                return []
            conn.execute(f.delete().where(f.c.filename.in_([w.filename for w in withdrawn])))
            insert = pg_insert(s).on_conflict_do_nothing()
            conn.execute(insert, [
                {"package": w.package, "version": w.version, "abi_tag": w.abi_tag,
                 "platform_tag": w.platform_tag, "cause": UPSTREAM_WHEEL,
                 "detail": collision_reason(w.filename, upstream[w.filename])
                 + "; the farm's copy was withdrawn"}
                for w in withdrawn])
        return withdrawn

    def record_skips(self, skips: Iterable[dict]) -> int:
        """Store build skips ({package, version, abi_tag, platform_tag, cause,
        detail}); one already there stays, one for a release or target the farm no
        longer has is left out.  How many were new."""
        s, v, a = self.t["build_skips"], self.t["versions"], self.t["build_targets"]
        added = 0
        with self._begin() as conn:
            for skip in skips:
                package, version = canonical_name(skip["package"]), normal_version(skip["version"])
                values = sa.select(
                    sa.literal(package, sa.String), sa.literal(version, sa.String),
                    sa.literal(skip["abi_tag"], sa.String),
                    sa.literal(skip["platform_tag"], sa.String),
                    sa.literal(skip["cause"], sa.String),
                    sa.literal(skip["detail"][:limits.CAUSE_DETAIL], sa.String),
                ).where(
                    sa.exists().where(v.c.package == package, v.c.version == version),
                    sa.exists().where(a.c.abi_tag == skip["abi_tag"],
                                      a.c.platform_tag == skip["platform_tag"]))
                added += conn.execute(pg_insert(s).from_select(
                    ["package", "version", "abi_tag", "platform_tag", "cause", "detail"], values)
                    .on_conflict_do_nothing()).rowcount
        return added

    def release_facts(self, jobs: Iterable[tuple[str, str]]
                      ) -> dict[tuple[str, str], tuple[Optional[str], list[str]]]:
        """{(package, version): (Requires-Python, upstream's wheel filenames)} for the
        releases among *jobs* upstream says anything of (the slave driver's skip
        verdict needs them)."""
        wanted = sorted(set(jobs))
        if not wanted:
            return {}
        v, u, w = self.t["versions"], self.t["upstream_files"], release_table(wanted)
        facts: dict[tuple[str, str], tuple[Optional[str], list[str]]] = {}
        with self._begin() as conn:
            for package, version, requires in conn.execute(
                    sa.select(v.c.package, v.c.version, v.c.requires_python)
                    .select_from(w).join(v, of_releases(v, w))
                    .where(v.c.requires_python.is_not(None))):
                facts[package, version] = (requires, [])
            for package, version, filename in conn.execute(
                    sa.select(u.c.package, u.c.version, u.c.filename)
                    .select_from(w).join(u, of_releases(u, w))
                    .order_by(u.c.filename)):
                wheels = facts.setdefault((package, version), (None, []))[1]
                if len(wheels) < MAX_UPSTREAM_WHEELS:
                    wheels.append(filename)
        return facts
