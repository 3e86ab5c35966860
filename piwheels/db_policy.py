"""The data layer's build-policy part: the farm's and projects' policies, and each
release's verdict (``versions.policy_reason``) kept up to date.

A mixin of :class:`piwheels.db.Database` (it uses its tables and transactions);
the rule itself is :func:`piwheels.build_policy.policy_reasons`.
"""

from __future__ import annotations

from itertools import groupby
from operator import itemgetter
from datetime import datetime
from typing import Any, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .build_policy import BuildPolicy, Release, parse_policy, policy_reasons
from .errors import InvalidPolicy, UnknownPackage
from .names import canonical_name

#: Projects whose releases are weighed against the build policy per round trip.
POLICY_BATCH = 5000
#: set_project_policy's "leave this as it is".
UNCHANGED: Any = object()


class PolicyData:
    """Build-policy reads and writes (mixed into :class:`piwheels.db.Database`)."""

    t: Any
    #: inside a transaction, the projects to weigh whole once it is done (so a
    #: project synchronised release by release is weighed once, not per release)
    _weigh_later: Optional[set[str]] = None

    def _weigh_packages(self, conn: Connection, packages: Iterable[str]) -> None:
        """Weigh these projects' releases whole: now, or at the end of the transaction."""
        if self._weigh_later is not None:
            self._weigh_later.update(packages)
        else:
            self._apply_policies(conn, packages)

    def _weigh_deferred(self, conn: Connection) -> None:
        if self._weigh_later:
            packages, self._weigh_later = self._weigh_later, set()
            self._apply_policies(conn, packages)

    def farm_policy(self) -> tuple[BuildPolicy, bool]:
        """The farm's build policy in force and whether it builds pre-releases."""
        configuration = self.t["configuration"]
        with self._begin() as conn:
            spec, prereleases = conn.execute(sa.select(
                configuration.c.build_policy, configuration.c.build_prereleases)).one()
        return parse_policy(spec), prereleases

    def apply_configured_policy(self, policy: BuildPolicy, prereleases: bool) -> str:
        """At the master's start: the configured farm policy replaces the one in force
        if the configuration changed since the last start (or this is the first);
        otherwise a run-time change (piw-control) stays.  Returns what was decided."""
        configuration = self.t["configuration"]
        with self._begin() as conn:
            row = conn.execute(sa.select(
                configuration.c.build_policy, configuration.c.build_prereleases,
                configuration.c.configured_policy, configuration.c.configured_prereleases,
                configuration.c.policy_pending,
            ).with_for_update()).one()
            in_force = f"{row.build_policy}{' with pre-releases' if row.build_prereleases else ''}"
            configured = f"{policy.spec}{' with pre-releases' if prereleases else ''}"
            if (row.configured_policy, row.configured_prereleases) == (policy.spec, prereleases):
                if row.policy_pending:  # a run-time change the last run did not finish
                    self._apply_policies(conn, None)
                    conn.execute(configuration.update().values(policy_pending=False))
                if in_force == configured:
                    return f"build policy {configured} (as configured)"
                return (f"build policy {in_force}, set at run time, stays in force; the "
                        f"configuration says {configured} (change it there to replace it)")
            conn.execute(configuration.update().values(
                build_policy=policy.spec, build_prereleases=prereleases,
                configured_policy=policy.spec, configured_prereleases=prereleases,
                policy_pending=False))
            self._apply_policies(conn, None)
        return f"build policy {configured} (from the configuration)"

    def set_farm_policy(self, policy: Optional[BuildPolicy] = None,
                        prereleases: Optional[bool] = None, *, weigh: bool = True) -> set[str]:
        """Change the farm's policy and/or pre-release switch (None: leave it) at run
        time; returns the projects whose releases changed verdict.  *weigh* False
        leaves the releases to a later :meth:`apply_policies` (the master's build
        queue does it, so the control socket answers at once on a large farm)."""
        configuration = self.t["configuration"]
        values: dict[str, Any] = {}
        if policy is not None:
            values["build_policy"] = policy.spec
        if prereleases is not None:
            values["build_prereleases"] = prereleases
        if not values:
            return set()
        with self._begin() as conn:
            conn.execute(configuration.update().values(**values, policy_pending=not weigh))
            return self._apply_policies(conn, None) if weigh else set()

    def project_policy(self, package: str) -> tuple[Optional[BuildPolicy], Optional[bool]]:
        """A project's own policy and pre-release switch (None: the farm's)."""
        packages = self.t["packages"]
        with self._begin() as conn:
            row = conn.execute(
                sa.select(packages.c.build_policy, packages.c.build_prereleases)
                .where(packages.c.package == canonical_name(package))).first()
        if row is None:
            raise UnknownPackage(f"unknown package {canonical_name(package)}")
        return (None if row.build_policy is None else parse_policy(row.build_policy),
                row.build_prereleases)

    def set_project_policy(self, package: str, *, policy: Any = UNCHANGED,
                           prereleases: Any = UNCHANGED, weigh: bool = True) -> set[str]:
        """Give *package* its own policy and/or pre-release switch (None: follow the
        farm's; :data:`UNCHANGED`: leave it).  A versions: policy must name
        releases the project has.  Returns the projects whose releases changed verdict."""
        package = canonical_name(package)
        packages, versions = self.t["packages"], self.t["versions"]
        values: dict[str, Any] = {}
        if policy is not UNCHANGED:
            values["build_policy"] = None if policy is None else policy.spec
        if prereleases is not UNCHANGED:
            values["build_prereleases"] = prereleases
        with self._begin() as conn:
            self._existing_package(package, conn)
            if policy is not UNCHANGED and policy is not None and policy.kind == "versions":
                known = set(conn.scalars(
                    sa.select(versions.c.version).where(versions.c.package == package)))
                missing = [v for v in policy.versions if v not in known]
                if missing:
                    raise InvalidPolicy(
                        f"{package} has no release {', '.join(missing)}; nothing was changed")
            if not values:
                return set()
            conn.execute(packages.update().where(packages.c.package == package).values(**values))
            if not weigh:
                conn.execute(self.t["configuration"].update().values(policy_pending=True))
                return set()
            return self._apply_policies(conn, [package])

    def apply_policies(self, packages: Optional[Iterable[str]] = None) -> set[str]:
        """Weigh these projects' releases (None: every project's) against the build
        policy again, after a change made with ``weigh=False`` (which this
        settles); returns the projects whose releases changed verdict."""
        with self._begin() as conn:
            changed = self._apply_policies(
                conn, None if packages is None else [canonical_name(p) for p in packages])
            conn.execute(self.t["configuration"].update().values(policy_pending=False))
            return changed

    def _weigh_new_releases(self, conn: Connection,
                            new: Iterable[tuple[str, str, Optional[datetime]]]) -> None:
        """Weigh releases just inserted (not yanked, no verdict yet): on their own
        where the project's policy allows it, else with the whole project (newest:N)."""
        configuration, p = self.t["configuration"], self.t["packages"]
        by_package: dict[str, list[Release]] = {}
        for package, version, released in new:
            by_package.setdefault(package, []).append(Release(version, released))
        if not by_package:
            return
        farm_spec, farm_prereleases = conn.execute(sa.select(
            configuration.c.build_policy, configuration.c.build_prereleases)).one()
        farm = parse_policy(farm_spec)
        names = sorted(by_package)
        own = {}
        for start in range(0, len(names), POLICY_BATCH):
            own.update((row.package, row) for row in conn.execute(
                sa.select(p.c.package, p.c.build_policy, p.c.build_prereleases)
                .where(p.c.package.in_(names[start:start + POLICY_BATCH]))))
        whole, updates = [], []
        for package, releases in by_package.items():
            policy, whose, prereleases = _effective(farm, farm_prereleases, own.get(package))
            if policy.weighs_siblings:
                whole.append(package)
                continue
            for version, reason in policy_reasons(policy, prereleases, releases, whose).items():
                if reason is not None:
                    updates.append((package, version, reason))
        self._store_verdicts(conn, updates)
        if whole:
            self._weigh_packages(conn, whole)

    def _apply_policies(self, conn: Connection, packages: Optional[Iterable[str]]) -> set[str]:
        """Bring ``policy_reason`` up to date for the releases of *packages* (None: all),
        with :func:`piwheels.build_policy.policy_reasons` as the only judge.

        Two tasks weighing one project take turns, and the second sees the
        first's releases: for a few projects their rows are locked (FOR NO KEY
        UPDATE, which inserts of their releases do not wait for); for the whole
        farm, the versions table is (SHARE ROW EXCLUSIVE: other writers wait
        until this transaction ends), and its rows are read in one stream.
        """
        configuration, p, v = self.t["configuration"], self.t["packages"], self.t["versions"]
        farm_spec, farm_prereleases = conn.execute(sa.select(
            configuration.c.build_policy, configuration.c.build_prereleases)).one()
        farm = parse_policy(farm_spec)
        settings = sa.select(p.c.package, p.c.build_policy, p.c.build_prereleases)
        columns = (v.c.package, v.c.version, v.c.released, v.c.yanked, v.c.policy_reason)
        if packages is None:
            conn.exec_driver_sql("LOCK TABLE versions IN SHARE ROW EXCLUSIVE MODE")
            own = {row.package: row for row in conn.execute(settings.where(
                p.c.build_policy.is_not(None) | p.c.build_prereleases.is_not(None)))}
            batches: Iterable = [conn.execute(
                sa.select(*columns).order_by(v.c.package)
                .execution_options(yield_per=POLICY_BATCH))]
            follows_farm = True
        else:
            names = sorted(set(packages))
            own, follows_farm = {}, False
            batches = []
            for start in range(0, len(names), POLICY_BATCH):
                chunk = names[start:start + POLICY_BATCH]
                own.update((row.package, row) for row in conn.execute(
                    settings.where(p.c.package.in_(chunk)).order_by(p.c.package)
                    .with_for_update(key_share=True)))
                batches.append(conn.execute(
                    sa.select(*columns).where(v.c.package.in_(chunk)).order_by(v.c.package)))
        changed: set[str] = set()
        updates: list[tuple[str, str, Optional[str]]] = []
        for rows in batches:
            for package, group in groupby(rows, key=itemgetter(0)):
                mine = own.get(package)
                if mine is None and not follows_farm:
                    continue  # no such project (any more)
                policy, whose, prereleases = _effective(farm, farm_prereleases, mine)
                group = list(group)
                verdict = policy_reasons(
                    policy, prereleases, (Release(r[1], r[2], r[3]) for r in group), whose)
                for row in group:
                    if verdict[row[1]] != row[4]:
                        updates.append((package, row[1], verdict[row[1]]))
                        changed.add(package)
                if len(updates) >= POLICY_BATCH:
                    self._store_verdicts(conn, updates)
            self._store_verdicts(conn, updates)
        return changed

    @staticmethod
    def _store_verdicts(conn: Connection, updates: list) -> None:
        """Write (package, version, reason) verdicts in one statement; empties *updates*."""
        if not updates:
            return
        pkgs, vers, reasons = map(list, zip(*updates))
        updates.clear()
        conn.execute(sa.text(
            "UPDATE versions v SET policy_reason = u.reason "
            "FROM unnest(CAST(:packages AS varchar[]), CAST(:versions AS varchar[]), "
            "            CAST(:reasons AS varchar[])) AS u(package, version, reason) "
            "WHERE v.package = u.package AND v.version = u.version"
        ), {"packages": pkgs, "versions": vers, "reasons": reasons})


def _effective(farm: BuildPolicy, farm_prereleases: bool,
               own: Any) -> tuple[BuildPolicy, str, bool]:
    """A project's policy in force, whose it is, and its pre-release switch, from
    its own settings row (None, or NULL columns: the farm's)."""
    policy, whose = farm, "farm"
    if own is not None and own.build_policy is not None:
        policy, whose = parse_policy(own.build_policy), "project"
    prereleases = farm_prereleases if own is None or own.build_prereleases is None \
        else own.build_prereleases
    return policy, whose, prereleases
