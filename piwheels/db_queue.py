"""The data layer's build-queue part: the targets (ABI, platform) builds are
made for, and the pages of releases each still needs, in queue order.

A mixin of :class:`piwheels.db.Database` (it uses its tables and
transactions); the rule it asks is ``needs_build`` in sql/create_piwheels.sql.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .db_reads import is_withheld
from .tags import Target, check_target


class QueueKey(NamedTuple):
    """A release's place in the build queue (the order of ``versions_buildable``;
    ``released`` is ``queue_released()``'s, never None)."""

    released: datetime
    package: str
    version: str



class TargetRow(NamedTuple):
    """A build target as the farm keeps it (a ``build_targets`` row)."""

    abi_tag: str
    platform_tag: str
    os_release: Optional[str]
    active: bool

    @property
    def target(self) -> Target:
        return Target(self.abi_tag, self.platform_tag)


class QueueData:
    """Build targets and the build queue (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    # --- targets --------------------------------------------------------------

    def add_build_target(self, target: tuple[str, str], active: bool = True,
                         os_release: Optional[str] = None) -> None:
        """An operator's word on *target*: built for (*active*) or not, pinned to
        *os_release* (None: any OS).  InvalidTag: not a target to build for."""
        targets = self.t["build_targets"]
        abi_tag, platform_tag = check_target(*target)
        stmt = pg_insert(targets).values(abi_tag=abi_tag, platform_tag=platform_tag,
                                         active=active, os_release=os_release or None)
        with self._begin() as conn:
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[targets.c.abi_tag, targets.c.platform_tag],
                set_={"active": stmt.excluded.active, "os_release": stmt.excluded.os_release}))

    def register_build_target(self, target: tuple[str, str], active: bool = True) -> bool:
        """Know *target* (building for it if *active*), unless an operator already
        decided about it; True if it was new (InvalidTag: not a target to build for)."""
        targets = self.t["build_targets"]
        abi_tag, platform_tag = check_target(*target)
        with self._begin() as conn:
            return conn.execute(
                pg_insert(targets).values(abi_tag=abi_tag, platform_tag=platform_tag,
                                          active=active)
                .on_conflict_do_nothing()
            ).rowcount == 1

    def get_build_targets(self, active_only: bool = True) -> list[Target]:
        """The targets builds are made for, oldest Python first (cp39 before cp311),
        then by ABI and platform."""
        return [row.target for row in self.get_target_rows(active_only)]

    def get_target_rows(self, active_only: bool = False) -> list[TargetRow]:
        """The ``build_targets`` rows, in :meth:`get_build_targets`' order."""
        targets = self.t["build_targets"]
        query = sa.select(targets.c.abi_tag, targets.c.platform_tag, targets.c.os_release,
                          targets.c.active).order_by(
            sa.func.abi_python_version(targets.c.abi_tag), targets.c.abi_tag,
            targets.c.platform_tag)
        if active_only:
            query = query.where(targets.c.active)
        with self._begin() as conn:
            return [TargetRow(*row) for row in conn.execute(query)]

    def pending_builds(self, target: tuple[str, str], limit: int,
                       newest_first: bool = True) -> list[tuple[str, str]]:
        """The next (package, version) pairs to build for *target*, best first."""
        return self.pending_page(target, limit, newest_first)[0]

    def pending_page(self, target: tuple[str, str], limit: int, newest_first: bool = True,
                     after: Optional[QueueKey] = None,
                     ) -> tuple[list[tuple[str, str]], Optional[QueueKey]]:
        """Up to *limit* builds for *target* (abi, platform) in queue order, starting after the
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
                sa.func.needs_build(versions.c.package, versions.c.version, *target),
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
