"""The data layer's build-queue part: the ABIs builds are made for, and the
pages of releases each still needs, in queue order.

A mixin of :class:`piwheels.db.Database` (it uses its tables and
transactions); the rule it asks is ``needs_build`` in sql/create_piwheels.sql.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .db_reads import is_withheld
from .tags import check_build_abi


class QueueKey(NamedTuple):
    """A release's place in the build queue (the order of ``versions_buildable``;
    ``released`` is ``queue_released()``'s, never None)."""

    released: datetime
    package: str
    version: str



class QueueData:
    """Build ABIs and the build queue (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    # --- ABIs ---------------------------------------------------------------

    def add_build_abi(self, abi_tag: str, active: bool = True) -> None:
        abis = self.t["build_abis"]
        check_build_abi(abi_tag)
        stmt = pg_insert(abis).values(abi_tag=abi_tag, active=active)
        with self._begin() as conn:
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[abis.c.abi_tag], set_={"active": stmt.excluded.active}))

    def register_build_abi(self, abi_tag: str, active: bool = True) -> bool:
        """Know *abi_tag* (building for it if *active*), unless an operator already
        decided about it; True if it was new (InvalidTag: not an ABI to build for)."""
        abis = self.t["build_abis"]
        check_build_abi(abi_tag)
        with self._begin() as conn:
            return conn.execute(
                pg_insert(abis).values(abi_tag=abi_tag, active=active).on_conflict_do_nothing()
            ).rowcount == 1

    def pending_builds(self, abi_tag: str, limit: int,
                       newest_first: bool = True) -> list[tuple[str, str]]:
        """The next (package, version) pairs to build for *abi_tag*, best first."""
        return self.pending_page(abi_tag, limit, newest_first)[0]

    def pending_page(self, abi_tag: str, limit: int, newest_first: bool = True,
                     after: Optional[QueueKey] = None,
                     ) -> tuple[list[tuple[str, str]], Optional[QueueKey]]:
        """Up to *limit* builds for *abi_tag* in queue order, starting after the
        *after* key; with the key to pass for the page after this one (None:
        this page reached the end of what is buildable).

        Finished releases are out of the ``versions_buildable`` index (the
        ``built`` flag, kept by triggers), and a page starts at its key in that
        index rather than at the head, where the releases just built leave
        their dead entries until vacuum clears them; so a page costs its own
        length however many releases the database holds.
        """
        versions, packages = self.t["versions"], self.t["packages"]
        key = (sa.func.queue_released(versions.c.released), versions.c.package,
               versions.c.version)
        # one direction for the whole key, so the versions_buildable index serves it
        direction = sa.desc if newest_first else sa.asc
        query = (
            sa.select(*(column.label(name) for column, name in
                        zip(key, ("released", "package", "version"))))
            .join(packages, packages.c.package == versions.c.package)
            .where(
                versions.c.has_sdist, ~versions.c.built, ~versions.c.yanked,
                versions.c.skip_reason.is_(None), versions.c.policy_reason.is_(None),
                packages.c.skip_reason.is_(None), ~is_withheld(packages),
                sa.func.needs_build(versions.c.package, versions.c.version, abi_tag),
            )
            .order_by(*(direction(column) for column in key))
            .limit(limit)
        )
        if after is not None:
            beyond = sa.tuple_(*key) < sa.tuple_(*after) if newest_first else \
                sa.tuple_(*key) > sa.tuple_(*after)
            query = query.where(beyond)
        with self._begin() as conn:
            # Walking the index in order stops after *limit* rows; sorting would
            # call needs_build on every buildable release.  Without fresh
            # statistics (just after a bulk import) the planner thinks the index
            # holds a handful of rows and picks the sort, so it is ruled out here.
            # (A failed query aborts the transaction, which undoes the setting.)
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
            rows = conn.execute(query).all()
            conn.exec_driver_sql("SET LOCAL enable_sort TO DEFAULT")
        last = QueueKey(*rows[-1]) if len(rows) == limit else None
        return [(row.package, row.version) for row in rows], last

    def get_build_abis(self, active_only: bool = True) -> list[str]:
        """The ABI tags builds are made for, oldest Python first (cp39 before cp311)."""
        abis = self.t["build_abis"]
        query = sa.select(abis.c.abi_tag).order_by(
            sa.func.abi_python_version(abis.c.abi_tag), abis.c.abi_tag)
        if active_only:
            query = query.where(abis.c.active)
        with self._begin() as conn:
            return list(conn.scalars(query))
