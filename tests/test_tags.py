"""piwheels.tags: which tags are valid, and the Python queue rule against the SQL one.

The project pages decide each version × ABI cell with
:func:`piwheels.tags.needs_build`; the build queue asks PostgreSQL's
``needs_build``.  They must agree, so the second half of this module records
one table of attempts in a real database and asks both about every
(release, ABI) pair.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from packaging.tags import Tag

from piwheels import limits
from piwheels.errors import PiwheelsError
from piwheels.tags import (
    InvalidTag, abi_version, build_abi_key, build_abi_of, build_abi_problem, build_serves, builder_problem,
    check_build_abi, failures_count, needs_build, platform_tag_problem, python_tag_problem, wheel_serves,
)

GOOD_ABIS = ["cp39", "cp311", "cp312", "cp313", "cp313t", "pypy310_pp73", "cp310d"]
BAD_ABIS = ["abi3", "none", "CP311", "cp311 ", " cp311", "", "c" * (limits.TAG + 1),
            "cp3", "py3", "cp", "cp311.cp312", "cp-311", "cp311\n", "ab\u00e9311"]


@pytest.mark.parametrize("tag", GOOD_ABIS)
def test_concrete_abis_are_accepted(tag):
    assert build_abi_problem(tag) is None
    assert check_build_abi(tag) == tag


@pytest.mark.parametrize("tag", BAD_ABIS)
def test_bad_abis_are_refused_with_a_reason(tag):
    problem = build_abi_problem(tag)
    assert problem and "\n" not in problem
    with pytest.raises(InvalidTag) as caught:
        check_build_abi(tag)
    assert str(caught.value) == problem
    assert isinstance(caught.value, PiwheelsError)  # the admin service answers these


def test_reasons_say_what_is_wrong():
    assert "lower-case" in build_abi_problem("CP311")
    assert "letters, digits" in build_abi_problem("cp311 ")
    assert "not an ABI a builder runs" in build_abi_problem("abi3")
    assert "empty" in build_abi_problem("")
    assert f"at most {limits.TAG}" in build_abi_problem("c" * 150)
    assert "not a string" in build_abi_problem(None)


@pytest.mark.parametrize("tag,ok", [
    ("cp311", True), ("py3", True), ("pp310", True), ("py2.py3", False), ("Cp311", False),
    ("cpython", False), ("311", False), ("", False), ("cp 311", False),
])
def test_python_tags(tag, ok):
    assert (python_tag_problem(tag) is None) is ok


@pytest.mark.parametrize("tag,ok", [
    ("linux_aarch64", True), ("manylinux_2_17_x86_64", True), ("linux_armv7l", True),
    ("any", False), ("linux aarch64", False), ("Linux_x86_64", False),
    ("linux_x86_64.linux_i686", False), ("", False), ("l" * 101, False),
])
def test_platform_tags(tag, ok):
    assert (platform_tag_problem(tag) is None) is ok


def test_a_builder_is_checked_tag_by_tag():
    assert builder_problem("cp311", "cp311", "linux_aarch64") is None
    assert "python tag" in builder_problem("snake", "cp311", "linux_aarch64")
    assert "ABI tag" in builder_problem("cp311", "abi3", "linux_aarch64")
    assert "platform tag" in builder_problem("cp311", "cp311", "linux x86")


def test_abis_compare_by_python_version_not_as_strings():
    assert abi_version("cp39") < abi_version("cp311") < abi_version("cp312")
    assert sorted(["cp311", "cp39", "cp312", "cp310"], key=abi_version) == \
        ["cp39", "cp310", "cp311", "cp312"]
    assert abi_version("py3") == abi_version("none") == (0, 0)


def test_the_abi_a_wheel_implies():
    assert build_abi_of(Tag("cp311", "cp311", "linux_aarch64")) == "cp311"
    assert build_abi_of(Tag("cp39", "abi3", "linux_aarch64")) == "cp39"
    assert build_abi_of(Tag("py3", "none", "any")) is None
    assert build_abi_of(Tag("pp310", "none", "any")) is None


def test_pure_and_abi3_wheels_serve_other_abis():
    assert wheel_serves("py3", "none", "cp39")
    assert wheel_serves("cp39", "abi3", "cp311")
    assert not wheel_serves("cp311", "abi3", "cp39")
    assert not wheel_serves("cp311", "cp311", "cp312")
    assert build_serves("cp311", "success", [("cp311", "cp311")], "cp311")
    assert not build_serves("cp311", "failed", [], "cp311")
    assert not build_serves("cp311", "rejected", [("py3", "none")], "cp312")


def test_a_failure_counts_only_once_retried():
    assert not failures_count(["failed"])
    assert not failures_count(["success", "rejected"])
    assert failures_count(["failed", "rejected"])
    assert needs_build([("cp311", "failed", [])], "cp311")
    assert not needs_build([("cp311", "failed", []), ("cp311", "failed", [])], "cp311")
    assert needs_build([("cp311", "failed", []), ("cp312", "failed", [])], "cp311")
    assert not needs_build([("cp311", "failed", []), ("cp39", "success", [("py3", "none")])],
                           "cp311")


# --- the Python rule against the SQL one -------------------------------------------

#: ABIs the farm builds for in the table below
FARM_ABIS = ["cp37", "cp39", "cp310", "cp311", "cp312", "cp313", "cp313t", "pypy310_pp73"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def wheel_variants(abi: str) -> list[list[tuple[str, str, str]]]:
    """The wheels (py, abi, platform) a successful attempt on *abi* may have made."""
    py = abi if abi.startswith("cp") else "pp310"
    return [
        [(py, abi, "linux_aarch64")],
        [("py3", "none", "any")],
        [("py2.py3", "none", "any")],
        [(py, "none", "linux_aarch64")],
        [(abi[:4] if abi.startswith("cp3") else py, "abi3", "linux_aarch64")],
        [("cp37", "abi3", "linux_aarch64")],
        [("cp312", "abi3", "linux_aarch64")],
        [("cp311.cp312", "abi3", "linux_aarch64")],
        [(py, abi, "linux_aarch64"), ("cp313", "abi3", "linux_armv7l")],
    ]


def attempt_table() -> list[list[tuple[str, str, str, list]]]:
    """Releases, each as its attempts (build ABI, status, builder, wheels)."""
    releases = []
    for abi in ["cp37", "cp311", "cp313t", "pypy310_pp73"]:
        releases.append([(abi, "failed", "a", [])])
        releases.append([(abi, "rejected", "a", [])])
        # a failure retried: by another builder, by the same one (after the delay)
        releases.append([(abi, "failed", "a", []), (abi, "failed", "b", [])])
        releases.append([(abi, "rejected", "a", []), (abi, "failed", "a", [])])
        releases.append([(abi, "failed", "a", []), (abi, "success", "b",
                                                     wheel_variants(abi)[0])])
        releases.extend([(abi, "success", "a", wheels)] for wheels in wheel_variants(abi))
    releases.append([])  # never attempted
    releases.append([("cp39", "failed", "a", []), ("cp311", "success", "a",
                                                   [("cp311", "abi3", "x")])])
    releases.append([("cp312", "success", "a", [("cp312", "cp312", "x")]),
                     ("cp310", "success", "b", [("py3", "none", "any")])])
    # failures on two ABIs are one each: neither counts
    releases.append([("cp311", "failed", "a", []), ("cp312", "failed", "b", [])])
    releases.append([("cp311", "failed", "a", []), ("cp311", "failed", "b", []),
                     ("cp311", "rejected", "c", [])])
    return releases


def skipped_abis(n: int) -> list[str]:
    """The ABIs release *n* of the table has a ``build_skips`` row for."""
    return [abi for k, abi in enumerate(FARM_ABIS) if (n + k) % 7 == 0]


def test_python_queue_rule_agrees_with_sql_needs_build(db, master_dsn):
    for abi in FARM_ABIS:
        db.add_build_abi(abi)
    table = attempt_table()
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for n, attempts in enumerate(table):
                package = f"case-{n}"
                conn.execute(sa.text("INSERT INTO packages (package) VALUES (:p)"), {"p": package})
                conn.execute(sa.text("INSERT INTO versions (package, version) VALUES (:p, '1.0')"),
                             {"p": package})
                for a, (build_abi, status, builder, wheels) in enumerate(attempts):
                    build_id = conn.execute(sa.text(
                        "INSERT INTO builds (package, version, abi_tag, slave_label, builder, "
                        "started, duration, status) VALUES (:p, '1.0', :abi, 's', :who, :t, "
                        "interval '1 s', :st) RETURNING build_id"),
                        {"p": package, "abi": build_abi, "who": builder, "t": T0,
                         "st": status}).scalar_one()
                    for w, (py, wabi, plat) in enumerate(wheels):
                        conn.execute(sa.text(
                            "INSERT INTO files (filename, build_id, filesize, filehash, "
                            "package_tag, package_version_tag, py_version_tag, abi_tag, "
                            "platform_tag, metadata_hash) VALUES (:f, :b, 1, :h, :p, '1.0', "
                            ":py, :abi, :plat, :h)"),
                            {"f": f"case_{n}-1.0-{a}{w}-{py}-{wabi}-{plat}.whl", "b": build_id,
                             "h": "a" * 64, "p": package, "py": py, "abi": wabi, "plat": plat})
                for abi in skipped_abis(n):
                    conn.execute(sa.text(
                        "INSERT INTO build_skips (package, version, abi_tag, cause, detail) "
                        "VALUES (:p, '1.0', :abi, 'requires-python', 'Requires-Python >=4')"),
                        {"p": package, "abi": abi})
        with engine.connect() as conn:
            sql_says = {
                (package, abi): needs for package, abi, needs in conn.execute(sa.text(
                    "SELECT p.package, a.abi_tag, needs_build(p.package, '1.0', a.abi_tag) "
                    "FROM packages p CROSS JOIN build_abis a"))}
            flags = dict(conn.execute(sa.text("SELECT package, built FROM versions")).all())
    finally:
        engine.dispose()
    python_says = {
        (f"case-{n}", abi): needs_build(
            [(build_abi, status, [(py, wabi) for py, wabi, _ in wheels])
             for build_abi, status, _, wheels in attempts], abi, skipped_abis(n))
        for n, attempts in enumerate(table) for abi in FARM_ABIS}
    assert len(sql_says) == len(table) * len(FARM_ABIS)
    disagree = {key: (python_says[key], sql_says[key])
                for key in python_says if python_says[key] != sql_says[key]}
    assert disagree == {}, disagree
    # the table holds both answers, for several ABIs (a rule that always says one
    # thing could not pass), and a single failure is still wanted where two are not
    assert {needs for needs in sql_says.values()} == {True, False}
    assert sum(not needs for needs in sql_says.values()) > len(table)
    assert sql_says["case-1", "cp37"] and not sql_says["case-2", "cp37"]
    # a skip settles an ABI the attempts leave open (case 0 failed once on cp37)
    assert not sql_says["case-0", "cp37"] and needs_build([("cp37", "failed", [])], "cp37")
    # the built flag the triggers keep says the same: built once no ABI needs a build
    assert flags == {f"case-{n}": not any(python_says[f"case-{n}", abi] for abi in FARM_ABIS)
                     for n in range(len(table))}


def test_python_abi_order_agrees_with_sql(db, master_dsn):
    tags = [*FARM_ABIS, "cp310d", "py3", "none", "abi3", "cp311.cp312", "pp39", "cp3"]
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for tag in tags:
                sql = conn.execute(sa.text("SELECT abi_python_version(:t)"), {"t": tag}).scalar_one()
                assert tuple(sql) == abi_version(tag), tag
    finally:
        engine.dispose()
    for abi in FARM_ABIS:
        db.add_build_abi(abi)
    assert db.get_build_abis() == sorted(FARM_ABIS, key=build_abi_key)


@pytest.mark.parametrize("tag", ["abi3", "none", "CP311", "cp311 "])
def test_the_data_layer_refuses_bad_abis_before_writing(db, tag):
    with pytest.raises(InvalidTag):
        db.register_build_abi(tag)
    with pytest.raises(InvalidTag):
        db.add_build_abi(tag)
    assert db.get_build_abis(active_only=False) == []
