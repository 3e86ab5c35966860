"""piw-initdb against a real PostgreSQL: create, no-op, upgrade, refusals."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from catalogue import differences, snapshot

from piwheels import schema
from piwheels.errors import Aborted, SchemaError
from piwheels.initdb import initdb

PIW_INITDB = str(Path(sys.executable).parent / "piw-initdb")

# A next schema version used to exercise the upgrade machinery on top of
# the real current one.
CURRENT = schema.SCHEMA_VERSION
NEXT = CURRENT + 1
NEXT_STEP = f"upgrade_piwheels_{CURRENT}_to_{NEXT}.sql"
#: The version 1 schema as it was shipped, to test the real upgrade from it.
V1_CREATE = Path(__file__).with_name("create_piwheels_v1.sql")
#: The version 2 schema as it was shipped (issue 13 moved on to 3).
V2_CREATE = Path(__file__).with_name("create_piwheels_v2.sql")
#: The version 3 schema as it was shipped (issue 14 moved on to 4).
V3_CREATE = Path(__file__).with_name("create_piwheels_v3.sql")
V2_ADDITIONS = """
ALTER TABLE packages ADD COLUMN homepage varchar(255) NULL;
CREATE TABLE rewrites_pending (
    package varchar(200) NOT NULL,
    requested timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rewrites_pending_pk PRIMARY KEY (package),
    CONSTRAINT rewrites_pending_package_fk FOREIGN KEY (package)
        REFERENCES packages (package) ON DELETE CASCADE
);
CREATE INDEX rewrites_pending_requested ON rewrites_pending (requested);
"""
V2_GRANTS = "GRANT SELECT, INSERT, DELETE ON rewrites_pending TO @ROLE@;\n"


def run_initdb(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PIW_INITDB, *args], capture_output=True, text=True, input=input, timeout=120,
    )


def make_next_scripts(tmp_path: Path, *, grants: str = V2_GRANTS,
                    upgrade_tail: str = "") -> Path:
    """A scripts directory for a next version that extends the real current one."""
    real_create = (schema.sql_dir() / schema.CREATE_SCRIPT).read_text()
    current_row = f"INSERT INTO configuration (id, schema_version) VALUES (1, {CURRENT});"
    assert current_row in real_create
    v2_create = real_create.replace(
        current_row, f"INSERT INTO configuration (id, schema_version) VALUES (1, {NEXT});",
    ) + V2_ADDITIONS + V2_GRANTS
    directory = tmp_path / "v2"
    directory.mkdir()
    (directory / schema.CREATE_SCRIPT).write_text(v2_create)
    (directory / NEXT_STEP).write_text(
        V2_ADDITIONS + grants + f"UPDATE configuration SET schema_version = {NEXT};\n"
        + upgrade_tail
    )
    return directory


def make_v1_scripts(tmp_path: Path) -> Path:
    """A scripts directory that creates the real version 1 schema."""
    return make_shipped_scripts(tmp_path, V1_CREATE)


def make_shipped_scripts(tmp_path: Path, create: Path) -> Path:
    """A scripts directory that creates a schema as it was shipped (*create*)."""
    directory = tmp_path / f"shipped-{create.stem}"
    directory.mkdir(exist_ok=True)
    (directory / schema.CREATE_SCRIPT).write_text(create.read_text())
    return directory


def schema_version(dsn: str) -> int | None:
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("configuration"):
                return None
            return conn.exec_driver_sql("SELECT schema_version FROM configuration").scalar()
    finally:
        engine.dispose()


def test_creates_schema_then_does_nothing(empty_database, master_role):
    first = run_initdb("--dsn", empty_database, "--user", master_role, "-y")
    assert first.returncode == 0, first.stderr
    assert f"created schema version {CURRENT}" in first.stdout
    assert schema_version(empty_database) == schema.SCHEMA_VERSION
    before = snapshot(empty_database)

    second = run_initdb("--dsn", empty_database, "--user", master_role, "-y")
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert snapshot(empty_database) == before


def test_asks_before_changing(empty_database, master_role):
    declined = run_initdb("--dsn", empty_database, "--user", master_role, input="n\n")
    assert declined.returncode == 1
    assert "pass -y" in declined.stderr
    assert schema_version(empty_database) is None


def test_declined_at_a_terminal_changes_nothing(empty_database, master_role, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Terminal("no\n"))
    with pytest.raises(Aborted):
        initdb(empty_database, master_role, assume_yes=False, out=io.StringIO())
    assert schema_version(empty_database) is None
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert initdb(empty_database, master_role, assume_yes=False, out=io.StringIO()) == 0
    assert schema_version(empty_database) == CURRENT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_upgrade_equals_fresh_create(postgres, master_role, tmp_path):
    scripts = make_next_scripts(tmp_path)
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    out = io.StringIO()
    initdb(upgraded, master_role, True, out)
    initdb(upgraded, master_role, True, out, target=NEXT, scripts_dir=scripts)
    assert "upgraded" in out.getvalue()
    initdb(fresh, master_role, True, io.StringIO(), target=NEXT, scripts_dir=scripts)
    assert schema_version(upgraded) == schema_version(fresh) == NEXT
    assert differences(snapshot(upgraded), snapshot(fresh)) == []
    # and once there, it is a no-op
    out = io.StringIO()
    initdb(upgraded, master_role, True, out, target=NEXT, scripts_dir=scripts)
    assert "nothing to do" in out.getvalue()


def test_catalogue_comparison_sees_a_forgotten_grant(postgres, master_role, tmp_path):
    scripts = make_next_scripts(tmp_path, grants="")
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO())
    initdb(upgraded, master_role, True, io.StringIO(), target=NEXT, scripts_dir=scripts)
    initdb(fresh, master_role, True, io.StringIO(), target=NEXT, scripts_dir=scripts)
    diff = differences(snapshot(upgraded), snapshot(fresh))
    assert any("rewrites_pending" in line and master_role in line for line in diff)


def test_catalogue_comparison_sees_a_missing_trigger(postgres, master_role):
    """The versions.built flag is kept by triggers: an upgrade that forgot one
    must not compare equal to a fresh create."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO())
    initdb(fresh, master_role, True, io.StringIO())
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER build_targets_version_built ON build_targets")
    finally:
        engine.dispose()
    diff = differences(snapshot(upgraded), snapshot(fresh))
    assert diff and all("build_targets_version_built" in line for line in diff), diff


def test_failed_upgrade_changes_nothing(postgres, master_role, tmp_path):
    scripts = make_next_scripts(tmp_path, upgrade_tail="SELECT 1 / 0;\n")
    dsn = postgres.dsn(postgres.create_database())
    initdb(dsn, master_role, True, io.StringIO())
    before = snapshot(dsn)
    with pytest.raises(SchemaError, match=f"{NEXT_STEP} failed: division by zero"):
        initdb(dsn, master_role, True, io.StringIO(), target=NEXT, scripts_dir=scripts)
    assert schema_version(dsn) == CURRENT
    assert snapshot(dsn) == before


def test_refuses_newer_schema(empty_database, master_role):
    initdb(empty_database, master_role, True, io.StringIO())
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE configuration SET schema_version = 99")
    engine.dispose()
    result = run_initdb("--dsn", empty_database, "--user", master_role, "-y")
    assert result.returncode == 1
    assert "version 99, newer than this piw-initdb knows" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_refuses_database_with_foreign_tables(empty_database, master_role):
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id integer)")
    engine.dispose()
    with pytest.raises(SchemaError, match="not a piwheels schema"):
        initdb(empty_database, master_role, True, io.StringIO())


def test_refuses_non_superuser(postgres, empty_database, master_role):
    database = empty_database.rsplit("/", 1)[1]
    result = run_initdb("--dsn", postgres.dsn(database, master_role), "--user", master_role, "-y")
    assert result.returncode == 1
    assert "must connect as a PostgreSQL superuser" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_role(empty_database):
    result = run_initdb("--dsn", empty_database, "--user", "no_such_role_piwheels", "-y")
    assert result.returncode == 1
    assert "role 'no_such_role_piwheels' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert schema_version(empty_database) is None


def test_unreachable_server(master_role):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port once the socket is closed
    result = run_initdb("--dsn", f"postgresql://postgres@127.0.0.1:{port}/x",
                        "--user", master_role, "-y")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot connect to the database at")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_option():
    result = run_initdb("--no-such-option")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_plan_missing_step(tmp_path):
    (tmp_path / schema.CREATE_SCRIPT).write_text("")
    (tmp_path / "upgrade_piwheels_1_to_2.sql").write_text("")
    assert [s.to_version for s in schema.plan(1, 2, tmp_path)] == [2]
    with pytest.raises(SchemaError, match="no upgrade script from schema version 2"):
        schema.plan(1, 3, tmp_path)
    assert schema.plan(3, 3, tmp_path) == []


def test_plan_orders_steps(tmp_path):
    (tmp_path / schema.CREATE_SCRIPT).write_text("")
    for old in (3, 1, 2):
        (tmp_path / f"upgrade_piwheels_{old}_to_{old + 1}.sql").write_text("")
    assert [s.name for s in schema.plan(1, 4, tmp_path)] == [
        "upgrade_piwheels_1_to_2.sql", "upgrade_piwheels_2_to_3.sql",
        "upgrade_piwheels_3_to_4.sql",
    ]
    assert schema.plan(None, 4, tmp_path)[0].name == schema.CREATE_SCRIPT


def test_real_scripts_reach_current_version():
    """Every upgrade script shipped forms one chain ending at SCHEMA_VERSION."""
    shipped = sorted(p.name for p in schema.sql_dir().glob("upgrade_piwheels_*.sql"))
    if shipped:
        first = int(shipped[0].split("_")[2])
        assert schema.plan(first)[-1].to_version == schema.SCHEMA_VERSION
    create = (schema.sql_dir() / schema.CREATE_SCRIPT).read_text()
    assert (f"INSERT INTO configuration (id, schema_version) VALUES (1, {schema.SCHEMA_VERSION});"
            in create)


def test_shipped_upgrade_from_version_1(postgres, master_role, tmp_path):
    """The real upgrade scripts take a version 1 database (as it was shipped) to
    exactly what a fresh create makes, and keep its rows: a release whose time
    version 1 did not know (the epoch) becomes unknown (NULL)."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO(), target=1,
           scripts_dir=make_v1_scripts(tmp_path))
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('foo')")
            conn.exec_driver_sql(
                "INSERT INTO versions (package, version) VALUES ('foo', '1.0')")
            conn.exec_driver_sql(
                "INSERT INTO versions (package, version, released) "
                "VALUES ('foo', '2.0', '2026-01-02 03:04:05+00')")
        out = io.StringIO()
        initdb(upgraded, master_role, True, out)
        assert "upgraded" in out.getvalue()
        with engine.connect() as conn:
            rows = dict(conn.exec_driver_sql(
                "SELECT version, released IS NULL FROM versions").all())
            status = conn.exec_driver_sql(
                "SELECT upstream_status, operator_status FROM packages").one()
    finally:
        engine.dispose()
    assert rows == {"1.0": True, "2.0": False}
    assert tuple(status) == ("active", None)
    initdb(fresh, master_role, True, io.StringIO())
    assert schema_version(upgraded) == schema_version(fresh) == schema.SCHEMA_VERSION
    assert differences(snapshot(upgraded), snapshot(fresh)) == []
def test_real_upgrade_equals_fresh_create(postgres, master_role, tmp_path):
    """The shipped upgrade scripts take the version 1 schema, with rows in it, to
    exactly what create_piwheels.sql makes today."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO(), target=1,
           scripts_dir=make_v1_scripts(tmp_path))
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('six')")
        conn.exec_driver_sql("INSERT INTO versions (package, version, has_sdist) "
                             "VALUES ('six', '1.0', true), ('six', '2.0rc1', true)")
    out = io.StringIO()
    initdb(upgraded, master_role, True, out)
    assert "upgraded" in out.getvalue()
    initdb(fresh, master_role, True, io.StringIO())
    assert schema_version(upgraded) == schema_version(fresh) == schema.SCHEMA_VERSION
    assert differences(snapshot(upgraded), snapshot(fresh)) == []
    with engine.begin() as conn:
        # the releases are kept, undecided until the master applies its policy
        assert conn.exec_driver_sql(
            "SELECT version, policy_reason FROM versions ORDER BY version").all() == [
                ("1.0", None), ("2.0rc1", None)]
        assert conn.exec_driver_sql(
            "SELECT build_policy, configured_policy FROM configuration").one() == ("all", None)
    engine.dispose()


def test_shipped_upgrade_from_version_2_keeps_attempts_and_retries_single_failures(
        postgres, master_role, tmp_path):
    """Version 2 to 3: every attempt is kept and names its builder (the label it
    was made under); a release that failed once for an ABI is offered again (one
    failure no longer counts), one that failed twice there is not; the result is
    what a fresh create makes (and version 5 puts a farm without platform wheels
    on linux_armv7l)."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO(), target=2,
           scripts_dir=make_shipped_scripts(tmp_path, V2_CREATE))
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO build_abis (abi_tag) VALUES ('cp311')")
            conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('once'), ('twice'), "
                                 "('good')")
            conn.exec_driver_sql("INSERT INTO versions (package, version, has_sdist) VALUES "
                                 "('once', '1.0', true), ('twice', '1.0', true), "
                                 "('good', '1.0', true)")
            conn.exec_driver_sql(
                "INSERT INTO builds (package, version, abi_tag, slave_label, started, duration, "
                "status, reason) VALUES "
                "('once', '1.0', 'cp311', 'pi-a', now(), '1 s', 'failed', 'broke'), "
                "('twice', '1.0', 'cp311', 'pi-a', now(), '1 s', 'failed', 'broke'), "
                "('twice', '1.0', 'cp311', 'pi-b', now(), '1 s', 'rejected', 'bad'), "
                "('good', '1.0', 'cp311', 'pi-b', now(), '2 s', 'success', NULL)")
            conn.exec_driver_sql(
                "INSERT INTO build_logs SELECT build_id, 'log of ' || package FROM builds")
            conn.exec_driver_sql(
                "INSERT INTO files (filename, build_id, filesize, filehash, package_tag, "
                "package_version_tag, py_version_tag, abi_tag, platform_tag, metadata_hash) "
                "SELECT 'good-1.0-py3-none-any.whl', build_id, 10, repeat('a', 64), 'good', "
                "'1.0', 'py3', 'none', 'any', repeat('b', 64) FROM builds "
                "WHERE package = 'good'")
            # version 2 counted every failure: all three releases were done
            assert conn.exec_driver_sql(
                "SELECT count(*) FROM versions WHERE built").scalar() == 3
        out = io.StringIO()
        initdb(upgraded, master_role, True, out)
        assert "upgraded" in out.getvalue()
        with engine.connect() as conn:
            attempts = conn.exec_driver_sql(
                "SELECT b.package, b.slave_label, b.builder, b.status, l.log FROM builds b "
                "JOIN build_logs l USING (build_id) ORDER BY b.build_id").all()
            files = conn.exec_driver_sql("SELECT filename FROM files").scalars().all()
            built = dict(conn.exec_driver_sql("SELECT package, built FROM versions").all())
            needs = dict(conn.exec_driver_sql(
                "SELECT package, needs_build(package, version, 'cp311', 'linux_armv7l') "
                "FROM versions").all())
    finally:
        engine.dispose()
    assert [tuple(row) for row in attempts] == [
        ("once", "pi-a", "pi-a", "failed", "log of once"),
        ("twice", "pi-a", "pi-a", "failed", "log of twice"),
        ("twice", "pi-b", "pi-b", "rejected", "log of twice"),
        ("good", "pi-b", "pi-b", "success", "log of good")]
    assert files == ["good-1.0-py3-none-any.whl"]
    assert built == {"once": False, "twice": True, "good": True}
    assert needs == {"once": True, "twice": False, "good": False}
    initdb(fresh, master_role, True, io.StringIO())
    assert schema_version(upgraded) == schema_version(fresh) == schema.SCHEMA_VERSION
    assert differences(snapshot(upgraded), snapshot(fresh)) == []


def test_shipped_upgrade_from_version_3_keeps_attempts(postgres, master_role, tmp_path):
    """Version 3 to 4: every attempt, file and log is kept; the new facts of an
    old attempt (its cause, its builder's image) are unknown; the result is what
    a fresh create makes."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO(), target=3,
           scripts_dir=make_shipped_scripts(tmp_path, V3_CREATE))
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO build_abis (abi_tag) VALUES ('cp311')")
            conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('bad'), ('good')")
            conn.exec_driver_sql("INSERT INTO versions (package, version, has_sdist) VALUES "
                                 "('bad', '1.0', true), ('good', '1.0', true)")
            conn.exec_driver_sql(
                "INSERT INTO builds (package, version, abi_tag, slave_label, started, duration, "
                "status, reason, builder) VALUES "
                "('bad', '1.0', 'cp311', 'pi-a', now(), '1 s', 'failed', 'broke', 'key-a'), "
                "('good', '1.0', 'cp311', 'pi-b', now(), '2 s', 'success', NULL, 'key-b')")
            conn.exec_driver_sql(
                "INSERT INTO build_logs SELECT build_id, 'log of ' || package FROM builds")
            conn.exec_driver_sql(
                "INSERT INTO files (filename, build_id, filesize, filehash, package_tag, "
                "package_version_tag, py_version_tag, abi_tag, platform_tag, metadata_hash) "
                "SELECT 'good-1.0-py3-none-any.whl', build_id, 10, repeat('a', 64), 'good', "
                "'1.0', 'py3', 'none', 'any', repeat('b', 64) FROM builds "
                "WHERE package = 'good'")
        out = io.StringIO()
        initdb(upgraded, master_role, True, out)
        assert "upgraded" in out.getvalue()
        with engine.connect() as conn:
            attempts = conn.exec_driver_sql(
                "SELECT b.package, b.builder, b.status, b.cause, b.image, l.log FROM builds b "
                "JOIN build_logs l USING (build_id) ORDER BY b.build_id").all()
            files = conn.exec_driver_sql(
                "SELECT f.filename, s.status FROM files f "
                "LEFT JOIN smoke_tests s USING (filename)").all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in attempts] == [
        ("bad", "key-a", "failed", None, None, "log of bad"),
        ("good", "key-b", "success", None, None, "log of good")]
    assert [tuple(row) for row in files] == [("good-1.0-py3-none-any.whl", None)]
    initdb(fresh, master_role, True, io.StringIO())
    assert schema_version(upgraded) == schema_version(fresh) == schema.SCHEMA_VERSION
    assert differences(snapshot(upgraded), snapshot(fresh)) == []


#: The version 4 schema as it was shipped (issue 15 moved on to 5).
V4_CREATE = Path(__file__).with_name("create_piwheels_v4.sql")


def test_shipped_upgrade_from_version_4_gives_every_row_a_target(
        postgres, master_role, tmp_path):
    """Version 4 to 5: build ABIs become build targets.  An attempt takes the
    platform of the wheels it made; an ABI's other rows (attempts without a
    platform wheel, skips, images) the platform most of its wheels carry; an
    ABI without wheels the farm's; attempts keep their OS release where their
    image says it.  The result is what a fresh create makes."""
    upgraded = postgres.dsn(postgres.create_database())
    fresh = postgres.dsn(postgres.create_database())
    initdb(upgraded, master_role, True, io.StringIO(), target=4,
           scripts_dir=make_shipped_scripts(tmp_path, V4_CREATE))
    engine = sa.create_engine(upgraded, poolclass=sa.pool.NullPool)
    wheel = ("INSERT INTO files (filename, build_id, filesize, filehash, package_tag, "
             "package_version_tag, py_version_tag, abi_tag, platform_tag, metadata_hash) "
             "SELECT '{0}-1.0-{1}-{2}-{3}.whl', build_id, 10, repeat('a', 64), '{0}', '1.0', "
             "'{1}', '{2}', '{3}', repeat('b', 64) FROM builds WHERE package = '{0}'")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO build_abis (abi_tag, active) VALUES "
                                 "('cp311', true), ('cp39', false)")
            conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('arm'), ('x86'), "
                                 "('x86b'), ('pure'), ('bad')")
            conn.exec_driver_sql("INSERT INTO versions (package, version, has_sdist) "
                                 "SELECT package, '1.0', true FROM packages")
            conn.exec_driver_sql(
                "INSERT INTO builder_images (image, abi_tag, os) VALUES "
                "(repeat('c', 64), 'cp311', 'Debian 12')")
            conn.exec_driver_sql(
                "INSERT INTO builds (package, version, abi_tag, slave_label, started, duration, "
                "status, reason, builder, image) "
                "SELECT package, '1.0', 'cp311', 'pi', now(), '1 s', "
                "CASE WHEN package = 'bad' THEN 'failed' ELSE 'success' END, NULL, 'key-a', "
                "CASE WHEN package = 'bad' THEN repeat('c', 64) END FROM packages")
            conn.exec_driver_sql(wheel.format("arm", "cp311", "cp311", "linux_aarch64"))
            conn.exec_driver_sql(wheel.format("x86", "cp311", "cp311", "linux_x86_64"))
            conn.exec_driver_sql(wheel.format("x86b", "cp311", "cp311", "linux_x86_64"))
            conn.exec_driver_sql(wheel.format("pure", "py3", "none", "any"))
            conn.exec_driver_sql(
                "INSERT INTO build_skips (package, version, abi_tag, cause, detail) VALUES "
                "('bad', '1.0', 'cp39', 'requires-python', 'needs 3.10')")
        out = io.StringIO()
        initdb(upgraded, master_role, True, out)
        assert "upgraded" in out.getvalue()
        with engine.connect() as conn:
            builds = {row[0]: tuple(row[1:]) for row in conn.exec_driver_sql(
                "SELECT package, abi_tag, platform_tag, os_release FROM builds")}
            targets = sorted(tuple(row) for row in conn.exec_driver_sql(
                "SELECT abi_tag, platform_tag, os_release, active FROM build_targets"))
            skips = conn.exec_driver_sql(
                "SELECT abi_tag, platform_tag FROM build_skips").all()
            images = conn.exec_driver_sql(
                "SELECT abi_tag, platform_tag FROM builder_images").all()
            needs = dict(conn.exec_driver_sql(
                "SELECT package, needs_build(package, version, 'cp311', 'linux_x86_64') "
                "FROM versions").all())
            # the upgrade recomputed the flag the triggers keep from then on
            stale = conn.exec_driver_sql(
                "SELECT count(*) FROM versions "
                "WHERE built <> version_built(package, version)").scalar()
    finally:
        engine.dispose()
    assert builds == {
        "arm": ("cp311", "linux_aarch64", None), "x86": ("cp311", "linux_x86_64", None),
        "x86b": ("cp311", "linux_x86_64", None), "pure": ("cp311", "linux_x86_64", None),
        "bad": ("cp311", "linux_x86_64", "Debian 12")}
    assert targets == [("cp311", "linux_aarch64", None, True),
                       ("cp311", "linux_x86_64", None, True),
                       ("cp39", "linux_x86_64", None, False)]
    assert [tuple(r) for r in skips] == [("cp39", "linux_x86_64")]
    assert [tuple(r) for r in images] == [("cp311", "linux_x86_64")]
    # the aarch64 wheel serves no x86_64 target; the pure one does; one failure is a claim
    assert needs == {"arm": True, "x86": False, "x86b": False, "pure": False, "bad": True}
    assert stale == 0
    initdb(fresh, master_role, True, io.StringIO())
    assert schema_version(upgraded) == schema_version(fresh) == schema.SCHEMA_VERSION
    assert differences(snapshot(upgraded), snapshot(fresh)) == []


def test_upgrade_platform_option_names_the_platform_of_a_farm_without_wheels(
        postgres, master_role, tmp_path):
    """A version 4 farm without a platform wheel: its ABIs take the platform
    the operator passes to piw-initdb."""
    dsn = postgres.dsn(postgres.create_database())
    initdb(dsn, master_role, True, io.StringIO(), target=4,
           scripts_dir=make_shipped_scripts(tmp_path, V4_CREATE))
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO build_abis (abi_tag) VALUES ('cp311')")
        result = run_initdb("--dsn", dsn, "--user", master_role, "-y",
                            "--upgrade-platform", "linux_aarch64")
        assert result.returncode == 0, result.stderr
        with engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT abi_tag, platform_tag FROM build_targets").all() == [
                    ("cp311", "linux_aarch64")]
    finally:
        engine.dispose()
