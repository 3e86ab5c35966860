"""A catalogue the size of the upstream index, seeded set-based (bench/scale.py).

Every table is filled by one ``INSERT ... SELECT`` over ``generate_series``
(no row leaves Python), with the triggers resting: the seed writes the
derived ``built`` flag itself, consistent with the history it makes.

Release *n* (1..releases) belongs to project ``proj-<(n-1) % projects + 1>``
as version ``<(n-1) // projects + 1>.0``, uploaded *n* minutes after the
catalogue's start (so the newest releases have the highest *n*), and has a
history by ``n % 20``:

* 0-10 (55 %): one successful build on the first target, a pure wheel
  (``py3-none-any``) that serves every target;
* 11-14 (20 %): one successful build per target, each with its platform wheel;
* 15-16 (10 %): two failed attempts per target (by two builders: settled);
* 17 (5 %): no sdist upstream (nothing to build);
* 18-19 (10 %): not built yet, waiting in the queue.

The builds of one release in :data:`LOG_EVERY` keep their logs (a full rewrite
writes one file per log: all of them would be more inodes than a shared disk has).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import sqlalchemy as sa

from piwheels.tags import Target

#: The three targets the bench seeds unless told otherwise: a 64-bit and a 32-bit
#: Raspberry Pi OS builder of one Python, and a newer Python on 64-bit.
TARGETS = (Target("cp311", "linux_aarch64"), Target("cp311", "linux_armv7l"),
           Target("cp313", "linux_aarch64"))
#: The builds of one release in this many keep their log rows (prime to the 20 kinds).
LOG_EVERY = 19
#: Build ids are release * SLOTS + slot (a release has at most 2 attempts per target).
SLOTS = 8
#: The catalogue's first upload.
EPOCH = "2015-01-01 00:00:00+00"

PACKAGE = "'proj-' || ((n - 1) % {projects} + 1)"
VERSION = "((n - 1) / {projects} + 1)::text || '.0'"
KIND = "(n % 20)"
RELEASED = f"timestamptz '{EPOCH}' + n * interval '1 minute'"


def release_of(n: int, projects: int) -> tuple[str, str]:
    """(package, version) of seeded release *n* (the SQL's rule, for the bench's probes)."""
    return f"proj-{(n - 1) % projects + 1}", f"{(n - 1) // projects + 1}.0"


def seed(dsn: str, projects: int, releases: int, targets: Sequence[Target] = TARGETS,
         say: Callable[[str], None] = print) -> dict[str, float]:
    """Fill the (superuser) *dsn*'s empty piwheels schema; seconds per step."""
    if not 1 <= len(targets) <= SLOTS // 2:
        raise ValueError(f"1 to {SLOTS // 2} targets, not {len(targets)}")
    fmt = {"projects": projects}
    package, version = PACKAGE.format(**fmt), VERSION.format(**fmt)
    abis = "ARRAY[" + ", ".join(f"'{t.abi_tag}'" for t in targets) + "]"
    platforms = "ARRAY[" + ", ".join(f"'{t.platform_tag}'" for t in targets) + "]"
    count = len(targets)
    releases_sql = f"generate_series(1, {releases}) AS n"
    wheel_stem = f"replace({package}, '-', '_') || '-' || {version}"
    # the target of build slot s: its index in the arrays
    slot_target = f"CASE WHEN {KIND} <= 14 THEN s ELSE s / 2 END + 1"
    steps = [
        ("targets", "INSERT INTO build_targets (abi_tag, platform_tag) "
                    f"SELECT * FROM unnest({abis}, {platforms})"),
        ("images", "INSERT INTO builder_images (image, abi_tag, platform_tag, os, first_seen) "
                   f"SELECT md5(a || p) || md5(p || a), a, p, 'Debian 12', timestamptz '{EPOCH}' "
                   f"FROM unnest({abis}, {platforms}) AS t (a, p)"),
        ("projects", "INSERT INTO packages (package, description, last_serial) "
                     "SELECT 'proj-' || n, 'Synthetic project number ' || n, n "
                     f"FROM generate_series(1, {projects}) AS n"),
        ("names", "INSERT INTO package_names (name, package) "
                  "SELECT package, package FROM packages"),
        ("releases", "INSERT INTO versions (package, version, released, has_sdist, built) "
                     f"SELECT {package}, {version}, {RELEASED}, {KIND} <> 17, "
                     f"       {KIND} <= 16 FROM {releases_sql}"),
        # slot s of release n: pure (kind <= 10, slot 0), one per target (11-14,
        # slot = target), two failures per target (15-16, slot = 2 * target + try)
        ("builds", "INSERT INTO builds (build_id, package, version, abi_tag, platform_tag, "
                   "                    slave_label, builder, started, duration, status, image, "
                   "                    os_release) "
                   "OVERRIDING SYSTEM VALUE "
                   f"SELECT n * {SLOTS} + s, {package}, {version}, "
                   f"       ({abis})[{slot_target}], ({platforms})[{slot_target}], "
                   "       'seed-' || (s % 2), 'seed-' || (s % 2), "
                   f"       {RELEASED} + interval '1 hour', interval '90 seconds', "
                   f"       CASE WHEN {KIND} <= 14 THEN 'success' ELSE 'failed' END, "
                   f"       md5(({abis})[{slot_target}] || ({platforms})[{slot_target}]) "
                   f"       || md5(({platforms})[{slot_target}] || ({abis})[{slot_target}]), "
                   "       'Debian 12' "
                   f"FROM {releases_sql}, generate_series(0, {2 * count - 1}) AS s "
                   f"WHERE ({KIND} <= 10 AND s = 0) OR ({KIND} BETWEEN 11 AND 14 AND s < {count})"
                   f"   OR {KIND} BETWEEN 15 AND 16"),
        ("identity", "SELECT setval(pg_get_serial_sequence('builds', 'build_id'), "
                     "coalesce(max(build_id), 0) + 1) FROM builds"),
        ("logs", "INSERT INTO build_logs (build_id, log) "
                 "SELECT build_id, 'building ' || package || ' ' || version || E'\\ndone\\n' "
                 f"FROM builds WHERE build_id / {SLOTS} % {LOG_EVERY} = 0"),
        ("files", "INSERT INTO files (filename, build_id, filesize, filehash, package_tag, "
                  "                   package_version_tag, py_version_tag, abi_tag, "
                  "                   platform_tag, requires_python, metadata_hash, published) "
                  f"SELECT {wheel_stem} || CASE WHEN {KIND} <= 10 THEN '-py3-none-any.whl' "
                  f"       ELSE '-' || ({abis})[s + 1] || '-' || ({abis})[s + 1] || '-' "
                  f"            || ({platforms})[s + 1] || '.whl' END, "
                  f"       n * {SLOTS} + s, 10000 + n % 90000, md5(n::text) || md5(s::text), "
                  f"       replace({package}, '-', '_'), {version}, "
                  f"       CASE WHEN {KIND} <= 10 THEN 'py3' ELSE ({abis})[s + 1] END, "
                  f"       CASE WHEN {KIND} <= 10 THEN 'none' ELSE ({abis})[s + 1] END, "
                  f"       CASE WHEN {KIND} <= 10 THEN 'any' ELSE ({platforms})[s + 1] END, "
                  f"       '>=3.9', md5('m' || n) || md5('d' || s), {RELEASED} + interval '2 hours' "
                  f"FROM {releases_sql}, generate_series(0, {count - 1}) AS s "
                  f"WHERE ({KIND} <= 10 AND s = 0) OR {KIND} BETWEEN 11 AND 14"),
        ("policy", "UPDATE configuration SET configured_policy = build_policy, "
                   "configured_prereleases = build_prereleases"),
    ]
    engine = sa.create_engine(dsn, isolation_level="AUTOCOMMIT")
    timings: dict[str, float] = {}
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET session_replication_role = replica")
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.exec_driver_sql("SET maintenance_work_mem = '256MB'")
            for name, sql in steps:
                start = time.perf_counter()
                conn.exec_driver_sql(sql.replace("%", "%%"))
                timings[name] = time.perf_counter() - start
                say(f"  seeded {name} in {timings[name]:.1f} s")
            start = time.perf_counter()
            # as autovacuum would leave it: statistics, and the visibility map
            conn.exec_driver_sql("VACUUM (ANALYZE)")
            timings["vacuum"] = time.perf_counter() - start
            say(f"  vacuumed and analysed in {timings['vacuum']:.1f} s")
    finally:
        engine.dispose()
    return timings


def table_counts(dsn: str) -> dict[str, int]:
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            return {table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                    for table in ("packages", "versions", "builds", "files", "build_logs")}
    finally:
        engine.dispose()


def pending_count(dsn: str) -> Optional[int]:
    """Releases the seed left waiting (kind 18-19)."""
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT count(*) FROM versions WHERE has_sdist AND NOT built").scalar()
    finally:
        engine.dispose()
