"""The data layer: every read and write the master makes, in SQLAlchemy Core.

The tables are defined by the scripts in sql/ and reflected here at start-up,
so the schema has one definition.  Each master task makes its own
:class:`Database` (its own connection); one is never shared across threads.
Names and versions are validated and normalised on the way in.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime
from typing import Iterable, Iterator, Optional

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from . import limits
from .connection import make_engine, translate_errors
from .db_builds import BuildData
from .db_policy import PolicyData
from .db_images import ImageData
from .db_queue import QueueData
from .db_reads import IndexReads, is_withheld
from .db_upstream import UpstreamData
from .errors import SchemaError, SchemaVersionMismatch, UnknownPackage, UnknownVersion
from .names import canonical_name, normal_version
from .project_status import ACTIVE, check_status, clean_reason
from .schema import SCHEMA_VERSION

log = logging.getLogger("piwheels.db")

TABLES = (
    "configuration", "packages", "package_names", "versions", "build_targets",
    "builds", "build_logs", "files", "dependencies", "build_skips", "builder_images",
    "upstream_files", "smoke_tests",
)



class Database(QueueData, BuildData, PolicyData, ImageData, IndexReads, UpstreamData):
    """One connection's worth of piwheels data operations."""

    def __init__(self, dsn: str) -> None:
        self._engine = make_engine(dsn)
        with translate_errors(self._engine):
            metadata = sa.MetaData()
            try:
                metadata.reflect(bind=self._engine, only=TABLES)
            except sa.exc.InvalidRequestError as exc:
                raise SchemaError(
                    f"the database has no complete piwheels schema ({exc}); run piw-initdb"
                ) from None
        self.t = metadata.tables
        self._conn: Optional[Connection] = None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A connection in a transaction: the caller's :meth:`transaction`, or a new one."""
        if self._conn is not None:
            with translate_errors(self._engine):  # translated here, for a savepoint to catch
                yield self._conn
            return
        with translate_errors(self._engine), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every operation inside the block one transaction (all or nothing)."""
        if self._conn is not None:
            raise RuntimeError("transactions do not nest")
        with translate_errors(self._engine), self._engine.begin() as conn:
            self._conn = conn
            self._weigh_later = set()
            try:
                yield
                self._weigh_deferred(conn)
            finally:
                self._conn = None
                self._weigh_later = None

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside :meth:`transaction`: undo only this block if it fails."""
        if self._conn is None:
            raise RuntimeError("a savepoint needs a transaction")
        with translate_errors(self._engine), self._conn.begin_nested():
            yield

    # --- configuration ----------------------------------------------------

    def schema_version(self) -> int:
        with self._begin() as conn:
            return conn.scalar(sa.select(self.t["configuration"].c.schema_version))

    def check_schema_version(self) -> None:
        """Raise :class:`SchemaVersionMismatch` unless the schema is the one this code needs."""
        found = self.schema_version()
        if found != SCHEMA_VERSION:
            raise SchemaVersionMismatch(found, SCHEMA_VERSION)

    def get_pypi_serial(self) -> int:
        with self._begin() as conn:
            return conn.scalar(sa.select(self.t["configuration"].c.pypi_serial))

    def set_pypi_serial(self, serial: int) -> None:
        """Record how far the change feed has been read; never moves backwards."""
        configuration = self.t["configuration"]
        with self._begin() as conn:
            conn.execute(
                configuration.update()
                .where(configuration.c.pypi_serial < serial)
                .values(pypi_serial=serial)
            )

    # --- packages and versions --------------------------------------------

    def add_package(self, name: str, *, description: str = "",
                    skip_reason: Optional[str] = None) -> bool:
        """Record a project under its canonical name (and *name* as an alias).

        Returns True if the project was new.
        """
        package = canonical_name(name)
        packages, names = self.t["packages"], self.t["package_names"]
        with self._begin() as conn:
            added = conn.execute(
                pg_insert(packages)
                .values(package=package, description=description[:limits.DESCRIPTION],
                        skip_reason=skip_reason or None)
                .on_conflict_do_nothing()
            ).rowcount == 1
            for alias in {package, name}:
                conn.execute(
                    pg_insert(names).values(name=alias, package=package)
                    .on_conflict_do_nothing()
                )
        return added

    def add_alias(self, package: str, alias: str) -> None:
        """Record another spelling of *package*'s name."""
        package = self._existing_package(package)
        canonical_name(alias)
        names = self.t["package_names"]
        with self._begin() as conn:
            conn.execute(
                pg_insert(names).values(name=alias, package=package)
                .on_conflict_do_update(index_elements=[names.c.name],
                                       set_={"package": package})
            )

    def set_description(self, package: str, description: str) -> None:
        packages = self.t["packages"]
        with self._begin() as conn:
            self._require(conn.execute(
                packages.update().where(packages.c.package == canonical_name(package))
                .values(description=description[:limits.DESCRIPTION])
            ), package)

    def skip_package(self, package: str, reason: Optional[str]) -> None:
        """Stop (reason given) or resume (None) building every version of *package*."""
        packages = self.t["packages"]
        with self._begin() as conn:
            self._require(conn.execute(
                packages.update().where(packages.c.package == canonical_name(package))
                .values(skip_reason=reason or None)
            ), package)

    def set_upstream_status(self, package: str, status: str,
                            reason: Optional[str] = None) -> bool:
        """Record the PEP 792 status upstream gives *package*; True if it changed."""
        return self._set_status(package, "upstream", status, reason)

    def set_operator_status(self, package: str, status: str,
                            reason: Optional[str] = None) -> bool:
        """An operator's status for *package* ("active" clears it); True if it changed."""
        return self._set_status(package, "operator", status, reason)

    def _set_status(self, package: str, who: str, status: str,
                    reason: Optional[str]) -> bool:
        check_status(status)
        reason = clean_reason(reason)
        if who == "operator" and status == ACTIVE:
            status, reason = None, None  # the operator's mark is cleared
        elif status == ACTIVE:
            reason = None
        packages = self.t["packages"]
        column, reason_column = packages.c[f"{who}_status"], packages.c[f"{who}_status_reason"]
        with self._begin() as conn:
            self._existing_package(package, conn)
            return conn.execute(
                packages.update()
                .where(packages.c.package == canonical_name(package))
                .where(sa.or_(column.is_distinct_from(status),
                              reason_column.is_distinct_from(reason)))
                .values({column: status, reason_column: reason})
            ).rowcount == 1

    def withheld_packages(self, packages: Iterable[str]) -> set[str]:
        """Which of *packages* are quarantined (their files are not served)."""
        wanted = sorted({canonical_name(package) for package in packages})
        if not wanted:
            return set()
        p = self.t["packages"]
        with self._begin() as conn:
            return set(conn.scalars(
                sa.select(p.c.package).where(p.c.package.in_(wanted), is_withheld(p))))

    def remove_package(self, package: str) -> bool:
        """Forget *package* with its versions, builds and files; True if it existed."""
        packages = self.t["packages"]
        with self._begin() as conn:
            return conn.execute(
                packages.delete().where(packages.c.package == canonical_name(package))
            ).rowcount == 1

    def add_version(self, package: str, version: str, *, released: Optional[datetime] = None,
                    has_sdist: bool = True, yanked: bool = False,
                    yank_reason: Optional[str] = None,
                    skip_reason: Optional[str] = None) -> bool:
        """Record a release of a known project; True if it was new.

        A release seen again may gain an sdist; it never loses one here.
        """
        package = canonical_name(package)
        version = normal_version(version)
        versions = self.t["versions"]
        stmt = pg_insert(versions).values(
            package=package, version=version, released=released,
            has_sdist=has_sdist, yanked=yanked,
            yank_reason=yank_reason if yanked else None,
            skip_reason=skip_reason or None,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[versions.c.package, versions.c.version],
            set_={"has_sdist": versions.c.has_sdist | stmt.excluded.has_sdist},
            where=~versions.c.has_sdist & stmt.excluded.has_sdist,
        ).returning(sa.literal_column("xmax = 0").label("inserted"))
        with self._begin() as conn:
            self._existing_package(package, conn)
            row = conn.execute(stmt).first()
            inserted = bool(row and row.inserted)
            if inserted and not yanked:
                self._weigh_new_releases(conn, [(package, version, released)])
            elif inserted:
                self._weigh_packages(conn, [package])
        return inserted

    def add_releases(self, releases: Iterable[tuple[str, str, Optional[datetime], bool]]
                     ) -> None:
        """Record many (name, version, released, has_sdist) at once, projects included.

        For catching up with the change feed: a few multi-row statements
        instead of several per release.  Like :meth:`add_version`, a release
        seen again may gain an sdist and never loses one.
        """
        merged: dict[tuple[str, str], list] = {}
        names: dict[str, str] = {}
        for name, version, released, has_sdist in releases:
            package, version = canonical_name(name), normal_version(version)
            names.setdefault(name, package)
            names.setdefault(package, package)
            row = merged.setdefault((package, version), [released, has_sdist])
            row[0], row[1] = _earliest(row[0], released), row[1] or has_sdist
        if not merged:
            return
        versions = self.t["versions"]
        rows = list(merged.items())
        # one statement, one parameter per column (not a row per parameter set)
        new = sa.func.unnest(
            sa.literal([p for (p, _), _ in rows], ARRAY(sa.String)),
            sa.literal([v for (_, v), _ in rows], ARRAY(sa.String)),
            sa.literal([r for _, (r, _) in rows], ARRAY(sa.DateTime(timezone=True))),
            sa.literal([h for _, (_, h) in rows], ARRAY(sa.Boolean)),
        ).table_valued("package", "version", "released", "has_sdist").render_derived(
            name="new", with_types=False)
        insert_versions = pg_insert(versions).from_select(
            ["package", "version", "released", "has_sdist", "yanked"],
            sa.select(*new.columns, sa.false()))
        insert_versions = insert_versions.on_conflict_do_update(
            index_elements=[versions.c.package, versions.c.version],
            set_={"has_sdist": versions.c.has_sdist | insert_versions.excluded.has_sdist},
            where=~versions.c.has_sdist & insert_versions.excluded.has_sdist,
        )
        with self._begin() as conn:
            self._insert_packages(conn, names)
            stored = conn.execute(insert_versions.returning(
                versions.c.package, versions.c.version, versions.c.released,
                sa.literal_column("xmax = 0").label("inserted")))
            self._weigh_new_releases(conn, [
                (row.package, row.version, row.released) for row in stored if row.inserted])

    def add_packages(self, names: Iterable[str]) -> set[str]:
        """Record many projects at once, like :meth:`add_package` (no description);
        the canonical names that were new."""
        canonical: dict[str, str] = {}
        for name in names:
            package = canonical_name(name)
            canonical.setdefault(name, package)
            canonical.setdefault(package, package)
        if not canonical:
            return set()
        with self._begin() as conn:
            return self._insert_packages(conn, canonical)

    def _insert_packages(self, conn: Connection, names: dict[str, str]) -> set[str]:
        """Insert {name: canonical name} as projects and their aliases, each set in one
        statement (a row per parameter set would be a round trip each); the new ones."""
        packages, aliases = self.t["packages"], self.t["package_names"]
        wanted = sorted(set(names.values()))
        new = set(conn.scalars(
            pg_insert(packages).from_select(
                ["package"], sa.select(sa.func.unnest(sa.literal(wanted, ARRAY(sa.String)))))
            .on_conflict_do_nothing().returning(packages.c.package)))
        pairs = sorted(names.items())
        conn.execute(pg_insert(aliases).from_select(
            ["name", "package"],
            sa.select(sa.func.unnest(sa.literal([n for n, _ in pairs], ARRAY(sa.String)),
                                     sa.literal([p for _, p in pairs], ARRAY(sa.String)))
                      .table_valued("name", "package").render_derived(with_types=False)
                      .columns))
            .on_conflict_do_nothing())
        return new

    def set_has_sdist(self, package: str, version: str, has_sdist: bool) -> None:
        self._update_version(package, version, has_sdist=has_sdist)

    def yank_version(self, package: str, version: str, reason: Optional[str] = None) -> None:
        self._update_version(package, version, yanked=True, yank_reason=reason or None)

    def unyank_version(self, package: str, version: str) -> None:
        self._update_version(package, version, yanked=False, yank_reason=None)

    def skip_version(self, package: str, version: str, reason: Optional[str]) -> None:
        self._update_version(package, version, skip_reason=reason or None)

    def remove_version(self, package: str, version: str) -> bool:
        """Forget one release with its builds and files; True if it existed."""
        versions = self.t["versions"]
        package = canonical_name(package)
        with self._begin() as conn:
            removed = conn.execute(
                versions.delete().where(
                    (versions.c.package == package)
                    & (versions.c.version == normal_version(version))
                )
            ).rowcount == 1
            if removed:
                self._weigh_packages(conn, [package])
        return removed

    def remove_builds(self, package: str, version: Optional[str] = None) -> int:
        """Forget the build attempts (and files) of a project or one release, so they are
        built again; returns how many attempts went."""
        builds = self.t["builds"]
        where = builds.c.package == canonical_name(package)
        if version is not None:
            where &= builds.c.version == normal_version(version)
        with self._begin() as conn:
            return conn.execute(builds.delete().where(where)).rowcount

    def get_versions(self, package: str) -> dict[str, dict]:
        """{version: {released, has_sdist, yanked, yank_reason, skip_reason, built,
        policy_reason, requires_python}}."""
        versions = self.t["versions"]
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(versions).where(versions.c.package == canonical_name(package))
            ).all()
        return {
            row.version: {
                "released": row.released, "has_sdist": row.has_sdist, "yanked": row.yanked,
                "yank_reason": row.yank_reason, "skip_reason": row.skip_reason,
                "built": row.built, "policy_reason": row.policy_reason,
                "requires_python": row.requires_python,
            }
            for row in rows
        }

    def package_serials(self) -> dict[str, int]:
        """{package: the upstream serial it was last brought up to}."""
        packages = self.t["packages"]
        with self._begin() as conn:
            return dict(conn.execute(sa.select(packages.c.package, packages.c.last_serial)).all())

    def set_package_serial(self, package: str, serial: int) -> None:
        packages = self.t["packages"]
        with self._begin() as conn:
            conn.execute(
                packages.update().where(packages.c.package == canonical_name(package))
                .values(last_serial=serial)
            )

    def _update_version(self, package: str, version: str, **values) -> None:
        versions = self.t["versions"]
        package, version = canonical_name(package), normal_version(version)
        with self._begin() as conn:
            result = conn.execute(
                versions.update().where(
                    (versions.c.package == package) & (versions.c.version == version)
                ).values(**values)
            )
            if result.rowcount != 1:
                self._existing_package(package, conn)
                raise UnknownVersion(f"unknown version {version} of {package}")
            if "yanked" in values:  # yanked releases do not count among the newest
                self._weigh_packages(conn, [package])

    def _existing_package(self, package: str, conn: Optional[Connection] = None) -> str:
        package = canonical_name(package)
        packages = self.t["packages"]
        query = sa.select(sa.func.count()).select_from(packages).where(
            packages.c.package == package)
        if conn is None:
            with self._begin() as conn:
                found = conn.scalar(query)
        else:
            found = conn.scalar(query)
        if not found:
            raise UnknownPackage(f"unknown package {package}")
        return package

    @staticmethod
    def _require(result, package: str) -> None:
        if result.rowcount != 1:
            raise UnknownPackage(f"unknown package {canonical_name(package)}")



def _earliest(a: Optional[datetime], b: Optional[datetime]) -> Optional[datetime]:
    """The earlier of two upload times, an unknown one (None) giving way to a known one."""
    known = [moment for moment in (a, b) if moment is not None]
    return min(known) if known else None
