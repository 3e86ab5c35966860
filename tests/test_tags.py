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
from piwheels.diagnosis import CAUSES
from piwheels.errors import PiwheelsError
from piwheels.tags import (
    InvalidTag, abi_version, build_abi_key, build_abi_of, build_abi_problem, build_serves, builder_problem,
    check_build_abi, deterministic, failed_images, failures_count, fixable_by_image, needs_build,
    platform_tag_problem, python_tag_problem, wheel_serves,
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
             for build_abi, status, _, wheels in attempts], abi, skipped=skipped_abis(n))
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


# --- builder images: the same failure on the same image is not built again ---------

IMG_A, IMG_B, IMG_C, IMG_X = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + seconds, tz=timezone.utc)


#: cp311's images: A first, then B; C comes later (the second phase of the SQL test)
IMAGES_BEFORE = {IMG_A: at(0), IMG_B: at(10)}
IMAGES_AFTER = {**IMAGES_BEFORE, IMG_C: at(100)}


def image_table() -> list[list[tuple]]:
    """Releases on cp311, each as its attempts (status, cause, image, started s)."""
    return [
        # a fixable failure on A before B was seen: B re-opens it (and it is A's alone)
        [("failed", "missing-header", IMG_A, 5)],
        # a deterministic failure nothing may fix, before B: it counts at once
        [("failed", "broken-sdist", IMG_A, 5)],
        # ... with B around (and as new): retried there
        [("failed", "broken-sdist", IMG_A, 50)],
        # ... on B, the newest: A is older, left behind: counts at once
        [("failed", "broken-sdist", IMG_B, 50)],
        [("failed", "broken-sdist", IMG_A, 50), ("failed", "broken-sdist", IMG_B, 60)],
        # failed on both images for a cause C may fix: C re-opens it
        [("failed", "missing-header", IMG_A, 50), ("failed", "missing-header", IMG_B, 60)],
        # ... and once C failed it too, it stays failed
        [("failed", "missing-header", IMG_A, 50), ("failed", "missing-header", IMG_B, 60),
         ("failed", "missing-header", IMG_C, 200)],
        # not deterministic, or no cause known, or no image known: the count of two
        [("failed", "timeout", IMG_A, 50)],
        [("failed", "timeout", IMG_A, 50), ("failed", "timeout", IMG_A, 60)],
        [("failed", "timeout", IMG_B, 50), ("failed", "broken-sdist", IMG_A, 60)],
        [("failed", None, IMG_B, 50)],
        [("rejected", None, IMG_B, 50)],
        [("failed", "broken-sdist", None, 50)],
        [("failed", "missing-header", None, 50), ("failed", "missing-header", None, 60)],
        # an image the farm never recorded: its claim counts at once
        [("failed", "needs-rust", IMG_X, 500)],
        [("failed", "missing-header", IMG_A, 50), ("success", None, IMG_B, 60)],
        # a failure after C was seen is not re-opened by it
        [("failed", "missing-library", IMG_C, 150), ("failed", "out-of-memory", IMG_B, 160)],
    ]


def python_image_says(attempts: list[tuple], images: dict) -> bool:
    return needs_build([("cp311", status, [("cp311", "cp311")] if status == "success" else [],
                         cause, image, at(started))
                        for status, cause, image, started in attempts], "cp311", images)


def test_a_deterministic_failure_waits_only_for_another_image():
    table = image_table()
    before = [python_image_says(attempts, IMAGES_BEFORE) for attempts in table]
    after = [python_image_says(attempts, IMAGES_AFTER) for attempts in table]
    assert before == [True, False, True, False, False, False, False, True, False, False,
                      True, True, True, False, False, False, False]
    # C re-opens exactly the failures a new image may fix
    assert [n for n, (b, a) in enumerate(zip(before, after)) if a != b] == [5, 13]
    assert after[0] and not after[6] and not after[16]


def test_failed_images_are_those_of_deterministic_failures():
    attempts = [("cp311", "failed", [], "missing-header", IMG_A, at(1)),
                ("cp311", "failed", [], "timeout", IMG_B, at(2)),
                ("cp312", "failed", [], "broken-sdist", IMG_C, at(3)),
                ("cp311", "failed", [], "broken-sdist", None, at(4))]
    assert failed_images(attempts, "cp311") == {IMG_A}
    # a failure without its start (not from the database) is its image's alone
    assert not needs_build([("cp311", "failed", [], "broken-sdist", IMG_A)], "cp311",
                           IMAGES_BEFORE)
    assert failed_images(attempts, "cp312") == {IMG_C}


def test_sql_cause_lists_agree_with_causes(db, master_dsn):
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    codes = [*CAUSES, "no-such-cause", None]
    try:
        with engine.connect() as conn:
            sql = {code: tuple(conn.execute(sa.text(
                "SELECT cause_deterministic(:c), cause_fixable_by_image(:c)"), {"c": code}).one())
                for code in codes}
    finally:
        engine.dispose()
    assert sql == {code: (deterministic(code), fixable_by_image(code)) for code in codes}
    assert sql["missing-header"] == (True, True) and sql["timeout"] == (False, False)


def test_python_image_rule_agrees_with_sql_and_a_new_image_reopens(db, master_dsn):
    db.add_build_abi("cp311")
    table = image_table()
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)

    def sql_says(conn) -> tuple[list[bool], list[bool]]:
        rows = conn.execute(sa.text(
            "SELECT v.package, needs_build(v.package, '1.0', 'cp311'), v.built FROM versions v "
            "ORDER BY v.package")).all()
        by_case = {int(package.split("-")[1]): (needs, built) for package, needs, built in rows}
        return ([by_case[n][0] for n in range(len(table))],
                [by_case[n][1] for n in range(len(table))])

    def add_images(conn, images: dict) -> None:
        for image, seen in images.items():
            conn.execute(sa.text("INSERT INTO builder_images (image, abi_tag, os, first_seen) "
                                 "VALUES (:i, 'cp311', 'test', :t) ON CONFLICT DO NOTHING"),
                         {"i": image, "t": seen})

    try:
        with engine.begin() as conn:
            add_images(conn, IMAGES_BEFORE)
            for n, attempts in enumerate(table):
                package = f"img-{n:02d}"
                conn.execute(sa.text("INSERT INTO packages (package) VALUES (:p)"), {"p": package})
                conn.execute(sa.text("INSERT INTO versions (package, version) VALUES (:p, '1.0')"),
                             {"p": package})
                for status, cause, image, started in attempts:
                    build_id = conn.execute(sa.text(
                        "INSERT INTO builds (package, version, abi_tag, slave_label, builder, "
                        "started, duration, status, cause, image) VALUES (:p, '1.0', 'cp311', "
                        "'s', 'w', :t, interval '1 s', :st, :c, :i) RETURNING build_id"),
                        {"p": package, "t": at(started), "st": status, "c": cause,
                         "i": image}).scalar_one()
                    if status == "success":
                        conn.execute(sa.text(
                            "INSERT INTO files (filename, build_id, filesize, filehash, "
                            "package_tag, package_version_tag, py_version_tag, abi_tag, "
                            "platform_tag, metadata_hash) VALUES (:f, :b, 1, :h, :p, '1.0', "
                            "'cp311', 'cp311', 'linux_x86_64', :h)"),
                            {"f": f"img_{n}-1.0-cp311-cp311-linux_x86_64.whl", "b": build_id,
                             "h": "a" * 64, "p": package})
        with engine.connect() as conn:
            needs_before, built_before = sql_says(conn)
        with engine.begin() as conn:
            add_images(conn, {IMG_C: IMAGES_AFTER[IMG_C]})  # the trigger re-weighs, one pass
        with engine.connect() as conn:
            needs_after, built_after = sql_says(conn)
    finally:
        engine.dispose()
    python_before = [python_image_says(attempts, IMAGES_BEFORE) for attempts in table]
    python_after = [python_image_says(attempts, IMAGES_AFTER) for attempts in table]
    assert needs_before == python_before
    assert needs_after == python_after
    # the built flag follows: what C re-opened is in the queue's index again
    assert built_before == [not needs for needs in python_before]
    assert built_after == [not needs for needs in python_after]
    assert built_before != built_after
