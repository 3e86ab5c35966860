"""piwheels.tags: which tags are valid, and the Python queue rule against the SQL one.

The project pages decide each version × target cell with
:func:`piwheels.tags.needs_build`; the build queue asks PostgreSQL's
``needs_build``.  They must agree, so the second half of this module records
one table of attempts in a real database and asks both about every
(release, target) pair, a target being an ABI on a platform.
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
    InvalidTag, Target, abi_version, build_abi_of, build_abi_problem, build_serves,
    builder_problem, check_build_abi, check_target, deterministic, failed_images, failures_count,
    fixable_by_image, needs_build, platform_tag_problem, python_tag_problem, target_key,
    wheel_serves,
)

ARM64, ARM32, X86 = "linux_aarch64", "linux_armv7l", "linux_x86_64"

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


def test_which_targets_a_wheel_serves():
    # a pure wheel: every target, on every platform
    assert wheel_serves("py3", "none", "any", ("cp39", ARM32))
    assert wheel_serves("py2.py3", "none", "any", ("cp313", ARM64))
    # abi3: later or equal ABIs on its own platform only
    assert wheel_serves("cp39", "abi3", ARM64, ("cp311", ARM64))
    assert not wheel_serves("cp39", "abi3", ARM64, ("cp311", ARM32))
    assert not wheel_serves("cp311", "abi3", ARM64, ("cp39", ARM64))
    # a platform wheel: its own (ABI, platform) only; aarch64 never serves armv7l
    assert wheel_serves("cp311", "cp311", ARM64, ("cp311", ARM64))
    assert not wheel_serves("cp311", "cp311", ARM64, ("cp311", ARM32))
    assert not wheel_serves("cp311", "cp311", ARM64, ("cp312", ARM64))
    # a compressed platform set serves each of its platforms
    assert wheel_serves("cp311", "cp311", f"{ARM32}.{ARM64}", ("cp311", ARM64))
    assert build_serves(("cp311", ARM64), "success", [("cp311", "cp311", ARM64)], ("cp311", ARM64))
    assert not build_serves(("cp311", ARM64), "success", [("cp311", "cp311", ARM64)],
                            ("cp311", ARM32))
    assert not build_serves(("cp311", ARM64), "failed", [], ("cp311", ARM64))
    assert not build_serves(("cp311", ARM64), "rejected", [("py3", "none", "any")],
                            ("cp312", ARM64))


def test_targets_are_checked_and_named():
    target = check_target("cp311", ARM64)
    assert target == ("cp311", ARM64) and str(target) == "cp311 linux_aarch64"
    assert target.label == "cp311 aarch64"
    assert Target.from_key(str(target)) == target
    for abi, platform in (("abi3", ARM64), ("cp311", "any"), ("cp311", "Linux_x86_64"),
                          ("none", "any")):
        with pytest.raises(InvalidTag):
            check_target(abi, platform)


def test_a_failure_counts_only_once_retried_and_per_target():
    a64, a32 = ("cp311", ARM64), ("cp311", ARM32)
    assert not failures_count(["failed"])
    assert not failures_count(["success", "rejected"])
    assert failures_count(["failed", "rejected"])
    assert needs_build([(a64, "failed", [])], a64)
    assert not needs_build([(a64, "failed", []), (a64, "failed", [])], a64)
    assert needs_build([(a64, "failed", []), (("cp312", ARM64), "failed", [])], a64)
    # failures on the other platform of the same ABI are the other target's
    assert needs_build([(a32, "failed", []), (a32, "failed", [])], a64)
    assert not needs_build([(a64, "failed", []), (("cp39", ARM32), "success",
                                                  [("py3", "none", "any")])], a64)
    # a target's own success settles it; another platform's wheel does not
    assert not needs_build([(a64, "success", [("cp311", "cp311", ARM64)])], a64)
    assert needs_build([(a32, "success", [("cp311", "cp311", ARM32)])], a64)
    assert not needs_build([(a32, "failed", [])], a32, skipped=[a32])
    assert needs_build([(a32, "failed", [])], a32, skipped=[a64])


# --- the Python rule against the SQL one -------------------------------------------

#: ABIs the farm builds for in the table below, each on two platforms
FARM_ABIS = ["cp37", "cp39", "cp310", "cp311", "cp312", "cp313", "cp313t", "pypy310_pp73"]
FARM_TARGETS = [Target(abi, platform) for abi in FARM_ABIS for platform in (ARM64, ARM32)]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def wheel_variants(abi: str, plat: str) -> list[list[tuple[str, str, str]]]:
    """The wheels (py, abi, platform) a successful attempt on (*abi*, *plat*) may have made."""
    py = abi if abi.startswith("cp") else "pp310"
    return [
        [(py, abi, plat)],
        [("py3", "none", "any")],
        [("py2.py3", "none", "any")],
        [(py, "none", plat)],
        [(abi[:4] if abi.startswith("cp3") else py, "abi3", plat)],
        [("cp37", "abi3", plat)],
        [("cp312", "abi3", plat)],
        [("cp311.cp312", "abi3", plat)],
        [(py, abi, plat), ("cp313", "abi3", ARM32)],
        # a wheel for the other platform (the slave accepts it too)
        [(py, abi, ARM64 if plat == ARM32 else ARM32)],
        [(py, abi, f"{ARM32}.{ARM64}")],
    ]


def attempt_table() -> list[list[tuple[tuple[str, str], str, str, list]]]:
    """Releases, each as its attempts (build target, status, builder, wheels)."""
    releases = []
    for target in [("cp37", ARM64), ("cp311", ARM32), ("cp313t", ARM64),
                   ("pypy310_pp73", ARM32)]:
        releases.append([(target, "failed", "a", [])])
        releases.append([(target, "rejected", "a", [])])
        # a failure retried: by another builder, by the same one (after the delay)
        releases.append([(target, "failed", "a", []), (target, "failed", "b", [])])
        releases.append([(target, "rejected", "a", []), (target, "failed", "a", [])])
        releases.append([(target, "failed", "a", []), (target, "success", "b",
                                                        wheel_variants(*target)[0])])
        releases.extend([(target, "success", "a", wheels)] for wheels in wheel_variants(*target))
    releases.append([])  # never attempted
    releases.append([(("cp39", ARM64), "failed", "a", []),
                     (("cp311", ARM64), "success", "a", [("cp311", "abi3", "x")])])
    releases.append([(("cp312", ARM64), "success", "a", [("cp312", "cp312", "x")]),
                     (("cp310", ARM32), "success", "b", [("py3", "none", "any")])])
    # failures on two targets are one each: neither counts, nor do two platforms'
    releases.append([(("cp311", ARM64), "failed", "a", []), (("cp312", ARM64), "failed", "b", [])])
    releases.append([(("cp311", ARM64), "failed", "a", []), (("cp311", ARM32), "failed", "b", [])])
    releases.append([(("cp311", ARM64), "failed", "a", []), (("cp311", ARM64), "failed", "b", []),
                     (("cp311", ARM64), "rejected", "c", [])])
    # an abi3 wheel of one platform and a platform wheel of the other
    releases.append([(("cp311", ARM64), "success", "a", [("cp311", "abi3", ARM64)]),
                     (("cp311", ARM32), "success", "b", [("cp311", "cp311", ARM32)])])
    return releases


def skipped_targets(n: int) -> list[Target]:
    """The targets release *n* of the table has a ``build_skips`` row for."""
    return [target for k, target in enumerate(FARM_TARGETS) if (n + k) % 7 == 0]


def test_python_queue_rule_agrees_with_sql_needs_build(db, master_dsn):
    for target in FARM_TARGETS:
        db.add_build_target(target)
    table = attempt_table()
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for n, attempts in enumerate(table):
                package = f"case-{n}"
                conn.execute(sa.text("INSERT INTO packages (package) VALUES (:p)"), {"p": package})
                conn.execute(sa.text("INSERT INTO versions (package, version) VALUES (:p, '1.0')"),
                             {"p": package})
                for a, ((build_abi, build_plat), status, builder, wheels) in enumerate(attempts):
                    build_id = conn.execute(sa.text(
                        "INSERT INTO builds (package, version, abi_tag, platform_tag, slave_label, "
                        "builder, started, duration, status) VALUES (:p, '1.0', :abi, :plat, 's', "
                        ":who, :t, interval '1 s', :st) RETURNING build_id"),
                        {"p": package, "abi": build_abi, "plat": build_plat, "who": builder,
                         "t": T0, "st": status}).scalar_one()
                    for w, (py, wabi, plat) in enumerate(wheels):
                        conn.execute(sa.text(
                            "INSERT INTO files (filename, build_id, filesize, filehash, "
                            "package_tag, package_version_tag, py_version_tag, abi_tag, "
                            "platform_tag, metadata_hash) VALUES (:f, :b, 1, :h, :p, '1.0', "
                            ":py, :abi, :plat, :h)"),
                            {"f": f"case_{n}-1.0-{a}{w}-{py}-{wabi}-{plat}.whl", "b": build_id,
                             "h": "a" * 64, "p": package, "py": py, "abi": wabi, "plat": plat})
                for abi, plat in skipped_targets(n):
                    conn.execute(sa.text(
                        "INSERT INTO build_skips (package, version, abi_tag, platform_tag, cause, "
                        "detail) VALUES (:p, '1.0', :abi, :plat, 'requires-python', "
                        "'Requires-Python >=4')"),
                        {"p": package, "abi": abi, "plat": plat})
        with engine.connect() as conn:
            sql_says = {
                (package, Target(abi, plat)): needs
                for package, abi, plat, needs in conn.execute(sa.text(
                    "SELECT p.package, t.abi_tag, t.platform_tag, "
                    "needs_build(p.package, '1.0', t.abi_tag, t.platform_tag) "
                    "FROM packages p CROSS JOIN build_targets t"))}
            flags = dict(conn.execute(sa.text("SELECT package, built FROM versions")).all())
    finally:
        engine.dispose()
    python_says = {
        (f"case-{n}", target): needs_build(
            [(build_target, status, wheels) for build_target, status, _, wheels in attempts],
            target, skipped=skipped_targets(n))
        for n, attempts in enumerate(table) for target in FARM_TARGETS}
    assert len(sql_says) == len(table) * len(FARM_TARGETS)
    disagree = {key: (python_says[key], sql_says[key])
                for key in python_says if python_says[key] != sql_says[key]}
    assert disagree == {}, disagree
    # the table holds both answers, for several targets (a rule that always says one
    # thing could not pass), and a single failure is still wanted where two are not
    assert {needs for needs in sql_says.values()} == {True, False}
    assert sum(not needs for needs in sql_says.values()) > len(table)
    cp37_arm64 = Target("cp37", ARM64)
    assert sql_says["case-1", cp37_arm64] and not sql_says["case-2", cp37_arm64]
    # a skip settles a target the attempts leave open (case 0 failed once on cp37 aarch64)
    assert not sql_says["case-0", cp37_arm64]
    assert needs_build([(cp37_arm64, "failed", [])], cp37_arm64)
    # one platform's wheel never serves the other platform of its ABI
    native = 5  # (cp37 aarch64's first wheel variant: its own platform wheel)
    assert not sql_says[f"case-{native}", cp37_arm64]
    assert sql_says[f"case-{native}", Target("cp37", ARM32)]
    # the built flag the triggers keep says the same: built once no target needs a build
    assert flags == {f"case-{n}": not any(python_says[f"case-{n}", t] for t in FARM_TARGETS)
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
    for target in reversed(FARM_TARGETS):
        db.add_build_target(target)
    assert db.get_build_targets() == sorted(FARM_TARGETS, key=target_key)


@pytest.mark.parametrize("target", [("abi3", ARM64), ("none", X86), ("CP311", X86),
                                    ("cp311 ", X86), ("cp311", "any"), ("cp311", "Linux_x86_64")])
def test_the_data_layer_refuses_bad_targets_before_writing(db, target):
    with pytest.raises(InvalidTag):
        db.register_build_target(target)
    with pytest.raises(InvalidTag):
        db.add_build_target(target)
    assert db.get_build_targets(active_only=False) == []


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
    target = ("cp311", X86)
    return needs_build([(target, status,
                         [("cp311", "cp311", X86)] if status == "success" else [],
                         cause, image, at(started))
                        for status, cause, image, started in attempts], target, images)


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
    cp311, cp312 = ("cp311", X86), ("cp312", X86)
    attempts = [(cp311, "failed", [], "missing-header", IMG_A, at(1)),
                (cp311, "failed", [], "timeout", IMG_B, at(2)),
                (cp312, "failed", [], "broken-sdist", IMG_C, at(3)),
                (cp311, "failed", [], "broken-sdist", None, at(4)),
                (("cp311", ARM64), "failed", [], "broken-sdist", IMG_B, at(5))]
    assert failed_images(attempts, cp311) == {IMG_A}
    # a failure without its start (not from the database) is its image's alone
    assert not needs_build([(cp311, "failed", [], "broken-sdist", IMG_A)], cp311,
                           IMAGES_BEFORE)
    assert failed_images(attempts, cp312) == {IMG_C}
    assert failed_images(attempts, ("cp311", ARM64)) == {IMG_B}


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
    db.add_build_target(("cp311", X86))
    db.add_build_target(("cp311", ARM64), active=False)  # its images are another target's
    table = image_table()
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)

    def sql_says(conn) -> tuple[list[bool], list[bool]]:
        rows = conn.execute(sa.text(
            "SELECT v.package, needs_build(v.package, '1.0', 'cp311', 'linux_x86_64'), "
            "v.built FROM versions v "
            "ORDER BY v.package")).all()
        by_case = {int(package.split("-")[1]): (needs, built) for package, needs, built in rows}
        return ([by_case[n][0] for n in range(len(table))],
                [by_case[n][1] for n in range(len(table))])

    def add_images(conn, images: dict, platform: str = X86) -> None:
        for image, seen in images.items():
            conn.execute(sa.text("INSERT INTO builder_images (image, abi_tag, platform_tag, os, "
                                 "first_seen) VALUES (:i, 'cp311', :plat, 'test', :t) "
                                 "ON CONFLICT DO NOTHING"),
                         {"i": image, "t": seen, "plat": platform})

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
                        "INSERT INTO builds (package, version, abi_tag, platform_tag, slave_label, "
                        "builder, started, duration, status, cause, image) VALUES (:p, '1.0', "
                        "'cp311', 'linux_x86_64', 's', 'w', :t, interval '1 s', :st, :c, :i) "
                        "RETURNING build_id"),
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
            # a new image of another target (cp311 on aarch64) re-opens nothing here
            add_images(conn, {IMG_C: IMAGES_AFTER[IMG_C]}, ARM64)
        with engine.connect() as conn:
            assert sql_says(conn) == (needs_before, built_before)
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
