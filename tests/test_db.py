"""The data layer against the real schema, connected as the master's role."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from piwheels import limits
from piwheels.connection import make_engine, translate_errors
from piwheels.db_files import FILE_COLUMNS
from piwheels.db import Database
from piwheels.errors import (
    DatabaseUnavailable, DataRefused, InvalidName, InvalidVersion, PermissionProblem,
    SchemaVersionMismatch, UnknownPackage, UnknownVersion,
)
from piwheels.protocols import WheelFacts
from piwheels.records import BuildRecord
from piwheels.schema import SCHEMA_VERSION
from piwheels.smoke import SmokeResult

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
HASH_A = "a" * 64
HASH_B = "b" * 64
#: the platform these tests build on (their wheels are linux_armv7l)
PLAT = "linux_armv7l"


def wheel(filename="foo_bar-1.0-cp311-cp311-linux_armv7l.whl", sha=HASH_A, abi="cp311",
          apt=(), requires=()) -> WheelFacts:
    name, version, py, abi_tag, plat = filename[:-4].split("-")
    return WheelFacts(
        filename=filename, size=1234, sha256=sha, package_tag=name, version_tag=version,
        py_tag=py, abi_tag=abi_tag, platform_tag=plat, requires_python=">=3.9",
        requires_dist=tuple(requires), metadata=b"Metadata-Version: 2.1\n",
        metadata_sha256=HASH_B, apt_dependencies=tuple(apt),
    )


def build(status="success", files=(), version="1.0", abi="cp311") -> BuildRecord:
    return BuildRecord(
        package="Foo_Bar", version=version, abi_tag=abi, platform_tag=PLAT, slave_label="pi4-1",
        started=NOW, duration=timedelta(seconds=42), status=status, log="built ok\n",
        files=tuple(files),
    )


def test_schema_version_matches(db):
    db.check_schema_version()


def test_schema_version_mismatch(db, schema_database):
    engine = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE configuration SET schema_version = 7")
    try:
        with pytest.raises(SchemaVersionMismatch, match="version 7, newer than this code"):
            db.check_schema_version()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE configuration SET schema_version = {SCHEMA_VERSION}")
        engine.dispose()


def test_add_package_canonicalises_and_keeps_display_name(db):
    assert db.add_package("Foo_Bar.baz", description="A thing")
    assert not db.add_package("foo-bar-baz")
    project = db.get_project("FOO.BAR_baz")
    assert project.package == "foo-bar-baz"
    assert project.description == "A thing"
    assert project.names == ("Foo_Bar.baz", "foo-bar-baz")


@pytest.mark.parametrize("name", ["", "-foo", "foo bar", "x" * 201, "föö"])
def test_invalid_names_rejected(db, name):
    with pytest.raises(InvalidName):
        db.add_package(name)


def test_versions_normalised_and_sorted(db):
    db.add_package("foo")
    assert db.add_version("foo", "1.0", released=NOW)
    assert db.add_version("foo", "1.10", released=NOW)
    assert db.add_version("foo", "1.2-1", released=NOW)
    assert not db.add_version("foo", "1.0", released=NOW)
    versions = [v.version for v in db.get_project("foo").versions]
    assert versions == ["1.10", "1.2.post1", "1.0"]


@pytest.mark.parametrize("version", ["", "not a version", "1" * 201])
def test_invalid_versions_rejected(db, version):
    db.add_package("foo")
    with pytest.raises(InvalidVersion):
        db.add_version("foo", version)


def test_version_of_unknown_package(db):
    with pytest.raises(UnknownPackage):
        db.add_version("nope", "1.0")
    db.add_package("foo")
    with pytest.raises(UnknownVersion):
        db.yank_version("foo", "9.9")


def test_binary_only_release_gains_sdist(db):
    db.add_package("foo")
    db.add_version("foo", "2.0", has_sdist=False)
    assert not db.get_project("foo").versions[0].has_sdist
    db.add_version("foo", "2.0", has_sdist=True)
    assert db.get_project("foo").versions[0].has_sdist
    db.add_version("foo", "2.0", has_sdist=False)
    assert db.get_project("foo").versions[0].has_sdist


def test_yank_and_unyank(db):
    db.add_package("foo")
    db.add_version("foo", "1.0")
    db.yank_version("foo", "1.0", "broken on arm")
    v = db.get_project("foo").versions[0]
    assert (v.yanked, v.yank_reason) == (True, "broken on arm")
    db.unyank_version("foo", "1.0")
    v = db.get_project("foo").versions[0]
    assert (v.yanked, v.yank_reason) == (False, None)


def test_skip_package_and_version(db):
    db.add_package("foo")
    db.add_version("foo", "1.0")
    db.skip_package("foo", "too big")
    db.skip_version("foo", "1.0", "needs CUDA")
    project = db.get_project("foo")
    assert project.skip_reason == "too big"
    assert project.versions[0].skip_reason == "needs CUDA"
    db.skip_package("foo", None)
    assert db.get_project("foo").skip_reason is None
    with pytest.raises(UnknownPackage):
        db.skip_package("bar", "x")


def test_record_build_with_files_and_dependencies(db):
    db.add_package("Foo_Bar")
    db.add_version("foo-bar", "1.0")
    db.add_build_target(("cp311", PLAT))
    build_id = db.record_build(build(files=[
        wheel(apt=("libc6", "libssl3"), requires=("six", "six", "x" * (limits.DEPENDENCY + 1))),
    ]))
    assert db.get_build_log(build_id) == "built ok\n"
    (version,) = db.get_project("foo-bar").versions
    (attempt,) = version.builds
    assert (attempt.build_id, attempt.status, attempt.abi_tag) == (build_id, "success", "cp311")
    assert attempt.duration == timedelta(seconds=42)
    (f,) = attempt.files
    assert f.sha256 == HASH_A and f.size == 1234 and f.requires_python == ">=3.9"
    assert f.dependencies == {"apt": ("libc6", "libssl3"), "pip": ("six",)}


def test_the_file_columns_are_every_fact_the_files_table_stores(schema_database):
    """The one mapping of facts to columns names real facts and every column of the
    files table but the database's own (a column added in sql/ fails here)."""
    engine = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            columns = set(conn.scalars(sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'files'")))
    finally:
        engine.dispose()
    assert set(FILE_COLUMNS) <= {f.name for f in fields(WheelFacts)}
    assert set(FILE_COLUMNS.values()) == columns - {"build_id", "published"}


def test_recorded_facts_read_back_under_their_own_names(db):
    db.add_package("Foo_Bar")
    db.add_version("foo-bar", "1.0")
    db.add_build_target(("cp311", PLAT))
    facts = wheel(sha=HASH_B)
    db.record_build(build(files=[facts]))
    (f,) = db.get_project("foo-bar").versions[0].builds[0].files
    # FileData is WheelFacts as stored: every fact a row keeps, none declared again
    read_back = {field.name for field in fields(f)} - {"published", "dependencies", "smoke"}
    assert read_back == set(FILE_COLUMNS)
    for name in read_back:
        assert getattr(f, name) == getattr(facts, name), name
    assert f.dependencies == {}
    assert f.smoke is None  # not tested


def test_smoke_tests_and_causes_are_recorded(db):
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    db.add_build_target(("cp311", PLAT))
    facts = wheel()
    smoke = SmokeResult(facts.filename, "failed", "import foo: ImportError: libfoo.so.1", "libfoo1")
    stray = SmokeResult("not-this-build.whl", "passed")  # of no file of the attempt: not kept
    db.record_build(replace(build(files=[facts]), smoke=(smoke, stray)))
    db.record_build(replace(build(status="failed", version="1.0"), cause="smoke-import",
                            cause_detail=smoke.detail, cause_package="libfoo1"))
    (ok, held) = db.get_project("foo-bar").versions[0].builds
    assert ok.files[0].smoke == smoke
    with db._engine.connect() as conn:
        assert conn.execute(sa.text("SELECT cause, cause_detail, cause_package FROM builds "
                                    "WHERE build_id = :id"), {"id": held.build_id}).one() == \
            ("smoke-import", smoke.detail, "libfoo1")
    # a successful attempt has no cause (the schema's CHECK)
    with pytest.raises(DataRefused):
        db.record_build(replace(build(), cause="smoke-import"))


def test_record_build_is_all_or_nothing(db):
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    db.add_build_target(("cp311", PLAT))
    db.record_build(build(files=[wheel()]))
    # the same filename again violates the files key: nothing of this attempt stays
    with pytest.raises(DataRefused):
        db.record_build(build(files=[wheel(sha=HASH_B)]))
    (version,) = db.get_project("foo-bar").versions
    assert len(version.builds) == 1


def test_bad_hash_rejected_by_schema(db):
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    db.add_build_target(("cp311", PLAT))
    with pytest.raises(DataRefused, match="files_filehash_ck"):
        db.record_build(build(files=[wheel(sha="XYZ")]))


def test_failed_build_has_no_files():
    with pytest.raises(ValueError, match="only a successful build"):
        build(status="failed", files=[wheel()])


def test_removing_a_version_cascades(db):
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    db.add_version("foo-bar", "2.0")
    db.add_build_target(("cp311", PLAT))
    db.record_build(build(files=[wheel()]))
    assert db.remove_version("foo-bar", "1.0")
    assert not db.remove_version("foo-bar", "1.0")
    assert [v.version for v in db.get_project("foo-bar").versions] == ["2.0"]
    assert db.remove_package("foo-bar")
    assert db.get_project("foo-bar") is None


def test_build_targets_order_numerically_and_keep_their_pin(db):
    for abi in ("cp311", "cp39", "cp313", "cp310"):
        db.add_build_target((abi, PLAT))
    db.add_build_target(("cp310", PLAT), active=False)
    db.add_build_target(("cp39", "linux_aarch64"))
    db.add_build_target(("cp39", PLAT), os_release="Debian 12")
    assert db.get_build_targets() == [("cp39", "linux_aarch64"), ("cp39", PLAT),
                                      ("cp311", PLAT), ("cp313", PLAT)]
    assert [t.abi_tag for t in db.get_build_targets(active_only=False)] == [
        "cp39", "cp39", "cp310", "cp311", "cp313"]
    # an operator's pin is kept with the target
    assert [(r.target, r.os_release) for r in db.get_target_rows() if r.abi_tag == "cp39"] == [
        (("cp39", "linux_aarch64"), None), (("cp39", PLAT), "Debian 12")]


def test_pypi_serial_never_moves_back(db):
    assert db.get_pypi_serial() == 0
    db.set_pypi_serial(1000)
    db.set_pypi_serial(10)
    assert db.get_pypi_serial() == 1000


def test_aliases(db):
    db.add_package("foo")
    db.add_alias("foo", "Foo.Legacy")
    assert "Foo.Legacy" in db.get_project("foo").names
    with pytest.raises(UnknownPackage):
        db.add_alias("bar", "baz")


@pytest.mark.parametrize("statement", [
    "DROP TABLE dependencies",
    "ALTER TABLE packages ADD COLUMN evil integer",
    "TRUNCATE packages CASCADE",
    "CREATE TABLE evil (id integer)",
    "UPDATE configuration SET schema_version = 2",
])
def test_master_role_cannot_change_the_schema(master_dsn, statement):
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied|must be owner"):
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def test_master_role_can_write_rows(master_dsn):
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO packages (package) VALUES ('rowtest')")
            conn.exec_driver_sql("UPDATE configuration SET pypi_serial = 5")
            conn.exec_driver_sql("DELETE FROM packages WHERE package = 'rowtest'")
    finally:
        engine.dispose()


def test_permission_problem_is_translated(master_dsn):
    engine = make_engine(master_dsn)
    try:
        with pytest.raises(PermissionProblem, match="must be owner"):
            with translate_errors(engine), engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE files")
    finally:
        engine.dispose()


def test_a_value_too_long_for_its_column_is_refused_as_data_and_changes_nothing(db):
    db.add_package("foo-bar")
    with pytest.raises(DataRefused, match="value too long"):
        with db.transaction():
            db.skip_package("foo-bar", "too long " * 20)
    assert db.get_project("foo-bar").skip_reason is None


def test_a_refused_value_inside_a_savepoint_undoes_only_that_block(db):
    db.add_package("foo-bar")
    with db.transaction():
        with pytest.raises(DataRefused):
            with db.savepoint():
                db.skip_package("foo-bar", "x" * 101)
        db.skip_package("foo-bar", "kept")
    assert db.get_project("foo-bar").skip_reason == "kept"


def test_an_unresolvable_host_is_an_unavailable_database():
    with pytest.raises(DatabaseUnavailable, match="cannot connect to the database at"):
        Database("postgresql://piwheels@no-such-host.invalid/piwheels")


def test_a_terminated_connection_is_an_unavailable_database(db, schema_database):
    db.add_package("foo-bar")
    admin = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(DatabaseUnavailable, match="lost the connection"):
            with db.transaction():
                db.get_project("foo-bar")  # the transaction's connection is open
                with admin.connect() as conn:
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                db.get_project("foo-bar")
    finally:
        admin.dispose()
    assert db.get_project("foo-bar") is not None  # the next operation connects again


def failed(version="1.0", abi="cp311", cause="missing-header", package="libfoo-dev",
           status="failed") -> BuildRecord:
    return replace(build(status, version=version, abi=abi), cause=cause,
                   cause_detail=f"{cause} of {version}", cause_package=package)


def test_unbuilt_failures_are_the_latest_failure_of_what_no_wheel_serves(db):
    db.add_package("Foo_Bar")
    for version in ("1.0", "2.0", "3.0", "4.0", "5.0"):
        db.add_version("Foo_Bar", version, released=NOW)
    for abi in ("cp311", "cp312"):
        db.add_build_target((abi, PLAT))
    pure = "foo_bar-3.0-py3-none-any.whl"
    for record in (
        failed("1.0", cause="timeout", package=None), failed("1.0"),  # the latest counts
        failed("1.0", abi="cp312"),  # the same cause on another target: counted with it
        failed("2.0"), build("success", version="2.0"),  # built since on cp311
        failed("3.0", abi="cp312"), build("success", [wheel(pure)], version="3.0"),  # pure
        failed("4.0", status="rejected", cause="bad-wheel", package=None),
    ):
        db.record_build(record)
    db.skip_version("Foo_Bar", "5.0", "needs a GPU")
    db.record_build(failed("5.0"))
    assert sorted(db.unbuilt_failure_counts()) == [
        ("foo-bar", "bad-wheel", None, 1, "bad-wheel of 4.0"),
        ("foo-bar", "missing-header", "libfoo-dev", 2, "missing-header of 1.0"),
    ]


# --- upstream's files and build skips (issue 14) ------------------------------------


def test_upstream_files_keep_same_bytes_and_withdraw_other_bytes(db):
    db.add_build_target(("cp311", PLAT))
    db.add_build_target(("cp312", PLAT))
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    same = wheel("foo_bar-1.0-cp311-cp311-linux_armv7l.whl", sha=HASH_A)
    other = wheel("foo_bar-1.0-py3-none-any.whl", sha=HASH_A)
    db.record_build(build(files=[same, other]))
    assert db.pending_builds(("cp312", PLAT), 10) == []  # the pure wheel serves it

    gone = db.set_upstream_files("foo-bar", "1.0", ">=3.9", [
        (same.filename, HASH_A), (other.filename, HASH_B)])
    assert [(w.filename, w.abi_tag) for w in gone] == [(other.filename, "cp311")]
    assert db.get_versions("foo-bar")["1.0"]["requires_python"] == ">=3.9"
    assert db.recorded_filenames([same.filename, other.filename]) == {same.filename}
    assert db.upstream_hashes([same.filename, other.filename, "x-1-py3-none-any.whl"]) == {
        same.filename: HASH_A, other.filename: HASH_B}
    (version,) = db.get_project("foo-bar").versions
    cause, detail = version.skips["cp311", PLAT]
    assert cause == "upstream-wheel" and detail.startswith(
        f"upstream serves {other.filename} with other bytes (sha256 {HASH_B})")
    # the pure wheel served cp312 too: without it, cp312 needs a build again
    assert db.pending_builds(("cp312", PLAT), 10) == [("foo-bar", "1.0")]
    # the same answer again changes nothing
    assert db.set_upstream_files("foo-bar", "1.0", ">=3.9", [
        (same.filename, HASH_A), (other.filename, HASH_B)]) == []


def test_a_skip_settles_its_abi_and_a_wheel_gone_upstream_reopens_it(db):
    db.add_build_target(("cp311", PLAT))
    db.add_package("foo-bar")
    db.add_version("foo-bar", "1.0")
    pure = "foo_bar-1.0-py3-none-any.whl"
    db.set_upstream_files("foo-bar", "1.0", None, [(pure, HASH_A)])
    assert db.release_facts([("foo-bar", "1.0"), ("foo-bar", "2.0")]) == {
        ("foo-bar", "1.0"): (None, [pure])}
    assert db.pending_builds(("cp311", PLAT), 10) == [("foo-bar", "1.0")]
    skip = {"package": "foo-bar", "version": "1.0", "abi_tag": "cp311", "platform_tag": PLAT,
            "cause": "upstream-wheel", "detail": f"upstream serves {pure}"}
    gone = {**skip, "version": "9.9"}  # a release the farm does not have: left out
    assert db.record_skips([skip, skip, gone]) == 1
    assert db.pending_builds(("cp311", PLAT), 10) == []
    assert db.get_versions("foo-bar")["1.0"]["built"]
    # upstream removed its wheel: the skip goes, the release is built after all
    db.set_upstream_files("foo-bar", "1.0", None, [])
    assert db.get_project("foo-bar").versions[0].skips == {}
    assert db.pending_builds(("cp311", PLAT), 10) == [("foo-bar", "1.0")]
