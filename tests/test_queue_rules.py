"""Which releases the build queue offers for each build target (the design's queue rules)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from piwheels.errors import InvalidProjectStatus, UnknownPackage
from piwheels.project_status import ACTIVE, PROJECT_STATUSES
from piwheels.protocols import WheelFacts
from piwheels.records import BuildRecord

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: the platform the farm of these tests builds on (and its wheels carry)
PLAT = "linux_aarch64"
#: a second platform, for the rules that tell platforms apart
ARM32 = "linux_armv7l"


@pytest.fixture
def farm_db(db):
    for abi in ("cp39", "cp311", "cp312"):
        db.add_build_target((abi, PLAT))
    return db


def release(db, name, version="1.0", *, age_h=0, **kwargs):
    db.add_package(name)
    db.add_version(name, version, released=T0 - timedelta(hours=age_h), **kwargs)


def attempt(db, name, abi, *, status="success", wheel_tags=None, version="1.0", builder=None,
            platform=PLAT):
    files = ()
    if status == "success":
        py, wheel_abi, plat = wheel_tags or (abi, abi, platform)
        filename = f"{name.replace('-', '_')}-{version}-{py}-{wheel_abi}-{plat}.whl"
        files = (WheelFacts(
            filename=filename, size=10, sha256="a" * 64, package_tag=name, version_tag=version,
            py_tag=py, abi_tag=wheel_abi, platform_tag=plat, requires_python=None,
            requires_dist=(), metadata=b"", metadata_sha256="b" * 64, apt_dependencies=()),)
    db.record_build(BuildRecord(
        package=name, version=version, abi_tag=abi, platform_tag=platform, slave_label="s",
        started=T0,
        duration=timedelta(seconds=1), status=status, log="", files=files,
        reason=None if status == "success" else "broke", builder=builder))


def pending(db, abi, platform=PLAT, **kwargs):
    return [p for p, _ in db.pending_builds((abi, platform), 100, **kwargs)]


def test_newest_first_and_oldest_first(farm_db):
    release(farm_db, "old", age_h=10)
    release(farm_db, "new", age_h=1)
    release(farm_db, "mid", age_h=5)
    assert pending(farm_db, "cp311") == ["new", "mid", "old"]
    assert pending(farm_db, "cp311", newest_first=False) == ["old", "mid", "new"]


def test_pure_wheel_serves_every_abi(farm_db):
    release(farm_db, "pure")
    attempt(farm_db, "pure", "cp311", wheel_tags=("py3", "none", "any"))
    for abi in ("cp39", "cp311", "cp312"):
        assert pending(farm_db, abi) == []


def test_abi3_serves_newer_pythons_only(farm_db):
    release(farm_db, "limited")
    attempt(farm_db, "limited", "cp311", wheel_tags=("cp311", "abi3", "linux_aarch64"))
    assert pending(farm_db, "cp39") == ["limited"]   # cp39 < cp311, not as strings
    assert pending(farm_db, "cp311") == []
    assert pending(farm_db, "cp312") == []


def test_a_failure_is_retried_once_then_counts(farm_db):
    release(farm_db, "broken")
    release(farm_db, "fine", age_h=1)
    attempt(farm_db, "broken", "cp311", status="failed", builder="key-a")
    # one failure is a claim: still queued, with who failed it and when
    assert pending(farm_db, "cp311") == ["broken", "fine"]
    assert farm_db.retry_holds(("cp311", PLAT), [("broken", "1.0"), ("fine", "1.0")]) == {
        ("broken", "1.0"): ("key-a", T0 + timedelta(seconds=1))}
    assert farm_db.retry_holds(("cp312", PLAT), [("broken", "1.0")]) == {}
    assert not farm_db.get_versions("broken")["1.0"]["built"]
    (failure,) = farm_db.failures("broken")
    assert (failure["builder"], failure["abi_tag"], failure["platform_tag"],
            failure["outcome"]) == ("key-a", "cp311", PLAT, "retrying")
    attempt(farm_db, "broken", "cp311", status="rejected", builder="key-b")
    assert pending(farm_db, "cp311") == ["fine"]   # the retry settled it
    assert pending(farm_db, "cp312") == ["broken", "fine"]
    assert [(f["builder"], f["status"], f["outcome"]) for f in farm_db.failures()] == [
        ("key-b", "rejected", "counts"), ("key-a", "failed", "counts")]
    assert farm_db.failures("fine") == []
    # a failure another builder's wheel answered
    attempt(farm_db, "fine", "cp311", status="failed", builder="key-a")
    attempt(farm_db, "fine", "cp311", builder="key-b")
    assert [f["outcome"] for f in farm_db.failures("fine")] == ["built since"]


def test_platform_wheel_serves_its_own_abi(farm_db):
    release(farm_db, "native")
    attempt(farm_db, "native", "cp312")
    assert pending(farm_db, "cp312") == []
    assert pending(farm_db, "cp311") == ["native"]


def test_platforms_of_one_abi_are_targets_of_their_own(farm_db):
    """cp311 on aarch64 and on armv7l: a platform wheel serves its own platform
    only, an abi3 wheel later ABIs of its own platform only, a pure wheel both;
    failures count per target."""
    for abi in ("cp311", "cp312"):
        farm_db.add_build_target((abi, ARM32))
    for name in ("native", "limited", "pure", "broken"):
        release(farm_db, name)
    attempt(farm_db, "native", "cp311")
    attempt(farm_db, "limited", "cp311", wheel_tags=("cp311", "abi3", PLAT))
    attempt(farm_db, "pure", "cp311", platform=ARM32, wheel_tags=("py3", "none", "any"))
    attempt(farm_db, "broken", "cp311", status="failed", builder="a")
    attempt(farm_db, "broken", "cp311", status="failed", builder="b")
    assert sorted(pending(farm_db, "cp311")) == []
    assert sorted(pending(farm_db, "cp312")) == ["broken", "native"]
    assert sorted(pending(farm_db, "cp311", ARM32)) == ["broken", "limited", "native"]
    assert sorted(pending(farm_db, "cp312", ARM32)) == ["broken", "limited", "native"]
    # an aarch64 wheel built on an armv7l builder (it accepts it): it serves aarch64
    attempt(farm_db, "broken", "cp312", platform=ARM32, wheel_tags=("cp312", "cp312", PLAT))
    assert "broken" not in pending(farm_db, "cp312")
    assert "broken" not in pending(farm_db, "cp312", ARM32)  # its own success
    assert "broken" in pending(farm_db, "cp311", ARM32)


def test_skipped_yanked_and_binary_only_are_not_built(farm_db):
    release(farm_db, "skipver")
    farm_db.skip_version("skipver", "1.0", "too big")
    release(farm_db, "skippkg")
    farm_db.skip_package("skippkg", "needs a GPU")
    release(farm_db, "yanked", yanked=True, yank_reason="bad")
    release(farm_db, "binary", has_sdist=False)
    assert pending(farm_db, "cp311") == []
    farm_db.skip_package("skippkg", None)
    farm_db.unyank_version("yanked", "1.0")
    farm_db.set_has_sdist("binary", "1.0", True)
    assert sorted(pending(farm_db, "cp311")) == ["binary", "skippkg", "yanked"]


def test_built_flag_follows_builds_and_abis(farm_db):
    release(farm_db, "flag")
    for abi in ("cp39", "cp311"):
        attempt(farm_db, "flag", abi)
    assert not farm_db.get_versions("flag")["1.0"]["built"]
    attempt(farm_db, "flag", "cp312", status="failed")
    assert not farm_db.get_versions("flag")["1.0"]["built"]  # to be retried
    attempt(farm_db, "flag", "cp312", status="failed", builder="other")
    assert farm_db.get_versions("flag")["1.0"]["built"]
    assert all(pending(farm_db, abi) == [] for abi in ("cp39", "cp311", "cp312"))
    farm_db.add_build_target(("cp313", PLAT))
    assert not farm_db.get_versions("flag")["1.0"]["built"]
    assert pending(farm_db, "cp313") == ["flag"]
    farm_db.remove_builds("flag")
    assert pending(farm_db, "cp311") == ["flag"]


def test_inactive_abis_are_not_offered(farm_db):
    farm_db.add_build_target(("cp39", PLAT), active=False)
    assert farm_db.get_build_targets() == [("cp311", PLAT), ("cp312", PLAT)]


@pytest.mark.parametrize("newest_first", [True, False])
def test_pages_follow_on_without_gaps_or_repeats(farm_db, newest_first):
    # releases sharing a release time are ordered by name, then version
    for n in range(7):
        release(farm_db, f"pkg-{n}", age_h=n // 2)
    release(farm_db, "pkg-3", "2.0", age_h=1)
    attempt(farm_db, "pkg-4", "cp311", status="failed")
    attempt(farm_db, "pkg-4", "cp311", status="failed", builder="other")
    whole = farm_db.pending_builds(("cp311", PLAT), 100, newest_first)
    assert len(whole) == 7
    pages, cursor = [], None
    while True:
        page, cursor = farm_db.pending_page(("cp311", PLAT), 3, newest_first, cursor)
        pages.append(page)
        if cursor is None:
            break
    assert [job for page in pages for job in page] == whole
    assert [len(page) for page in pages] == [3, 3, 1]


def test_batch_of_attempts_keeps_each_release_flag(farm_db):
    """Several attempts in one transaction (the recorder's batches): each
    release's built flag follows its own attempts."""
    for name in ("one", "two", "pure"):
        release(farm_db, name)

    def record(name, abi, tags=None):
        return BuildRecord(
            package=name, version="1.0", abi_tag=abi, platform_tag=PLAT, slave_label="s",
            started=T0,
            duration=timedelta(seconds=1), status="failed" if tags is None else "success",
            log="", reason=None if tags else "broke",
            files=() if tags is None else (WheelFacts(
                filename=f"{name}-1.0-{'-'.join(tags)}.whl", size=10, sha256="a" * 64,
                package_tag=name, version_tag="1.0", py_tag=tags[0], abi_tag=tags[1],
                platform_tag=tags[2], requires_python=None, requires_dist=(), metadata=b"",
                metadata_sha256="b" * 64, apt_dependencies=()),))

    farm_db.record_builds([
        record("one", "cp39"), record("one", "cp311"), record("one", "cp312"),
        record("one", "cp39"), record("one", "cp311"), record("one", "cp312"),
        record("two", "cp311"),
        record("pure", "cp39", ("py3", "none", "any")),
    ])
    def built(name):
        return farm_db.get_versions(name)["1.0"]["built"]

    # every ABI failed "one" twice and the pure wheel serves them all; "two" is
    # wanted still, on cp311 too (one failure is retried)
    assert built("one") and built("pure") and not built("two")
    for abi, wanted in (("cp39", ["two"]), ("cp311", ["two"]), ("cp312", ["two"])):
        assert pending(farm_db, abi) == wanted
    farm_db.remove_builds("one", None)
    assert not built("one") and built("pure")
    assert sorted(pending(farm_db, "cp311")) == ["one", "two"]


@pytest.mark.parametrize("newest_first", [True, False])
def test_unknown_release_times_sort_as_the_oldest_and_page_cleanly(farm_db, newest_first):
    release(farm_db, "known-new", age_h=1)
    release(farm_db, "known-old", age_h=50)
    for name in ("unknown-b", "unknown-a", "unknown-c"):
        farm_db.add_package(name)
        farm_db.add_version(name, "1.0", released=None)
    if not newest_first:
        order = ["unknown-a", "unknown-b", "unknown-c", "known-old", "known-new"]
    else:
        order = ["known-new", "known-old", "unknown-c", "unknown-b", "unknown-a"]
    assert pending(farm_db, "cp311", newest_first=newest_first) == order
    pages, cursor = [], None
    while True:
        page, cursor = farm_db.pending_page(("cp311", PLAT), 2, newest_first, cursor)
        pages += [p for p, _ in page]
        if cursor is None:
            break
    assert pages == order


def test_the_queue_walks_its_index(farm_db):
    """Unknown times are ordered by the same expression the index holds, so the
    queue is still a walk of versions_buildable, not a sort."""
    release(farm_db, "indexed")
    with farm_db._begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_sort = off")
        plan = "\n".join(conn.exec_driver_sql(
            "EXPLAIN SELECT package FROM versions WHERE has_sdist AND NOT built "
            "AND NOT yanked AND skip_reason IS NULL AND policy_reason IS NULL "
            "ORDER BY queue_released(released) DESC, package DESC, version DESC LIMIT 5"
        ).scalars())
    assert "versions_buildable" in plan and "Sort" not in plan


@pytest.mark.parametrize("who", ["upstream", "operator"])
def test_quarantined_projects_are_not_offered_until_lifted(farm_db, who):
    release(farm_db, "risky", age_h=1)
    release(farm_db, "fine", age_h=2)
    setter = getattr(farm_db, f"set_{who}_status")
    for status in ("deprecated", "archived"):
        setter("risky", status, "why")
        assert pending(farm_db, "cp311") == ["risky", "fine"]
    assert setter("risky", "quarantined", "malware")
    assert pending(farm_db, "cp311") == ["fine"]
    assert farm_db.withheld_packages(["risky", "fine", "unknown-one"]) == {"risky"}
    assert not setter("risky", "quarantined", "malware")  # already so: no change
    setter("risky", "active")
    assert pending(farm_db, "cp311") == ["risky", "fine"]
    assert farm_db.withheld_packages(["risky"]) == set()


def test_a_bad_status_is_refused_and_changes_nothing(farm_db):
    release(farm_db, "steady")
    farm_db.set_operator_status("steady", "archived", "done")
    with pytest.raises(InvalidProjectStatus, match="unknown project status 'frozen'; choose one "
                                                   "of active, deprecated, archived"):
        farm_db.set_operator_status("steady", "frozen", "no")
    with pytest.raises(InvalidProjectStatus):
        farm_db.set_upstream_status("steady", "Quarantined")
    project = farm_db.get_project("steady")
    assert (project.operator_status, project.operator_status_reason) == ("archived", "done")
    assert project.upstream_status == "active"
    with pytest.raises(UnknownPackage):
        farm_db.set_operator_status("nobody-has-this", "quarantined")


def test_the_schema_allows_exactly_the_known_statuses(farm_db):
    """The statuses are declared in piwheels.project_status; the CHECK constraints
    must list the same ones (the operator's without 'active', which clears it)."""
    with farm_db._begin() as conn:
        found = dict(conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname IN ('packages_upstream_status_ck', 'packages_operator_status_ck')"
        ).all())
    for name, expected in (("packages_upstream_status_ck", set(PROJECT_STATUSES)),
                           ("packages_operator_status_ck", set(PROJECT_STATUSES) - {ACTIVE})):
        assert set(re.findall(r"'([a-z]+)'", found[name])) == expected, found[name]


def test_images_decide_deterministic_failures_in_queue_failures_and_pages(farm_db):
    from piwheels.index_pages import Site, project_context

    image_a, image_b = "a" * 64, "b" * 64
    assert farm_db.register_image(image_a, ("cp311", PLAT), "Debian 12")
    assert not farm_db.register_image(image_a, ("cp311", PLAT), "Debian 12")  # known
    assert not farm_db.register_image(image_b, ("cp399", PLAT), "Debian 12")  # no such ABI: ignored
    release(farm_db, "nohdr")
    release(farm_db, "slow", age_h=1)
    for name, cause in (("nohdr", "missing-header"), ("slow", "timeout")):
        farm_db.record_build(BuildRecord(
            package=name, version="1.0", abi_tag="cp311", platform_tag=PLAT, slave_label="s",
            started=T0,
            duration=timedelta(seconds=1), status="failed", log="", reason="broke",
            builder="key-a", image=image_a, cause=cause))
    site = Site(name="test", index_url="http://x/simple/", upstream_simple="http://u/simple/")

    def cell(name):
        page = project_context(farm_db.get_project(name), [("cp311", PLAT)], site)
        return page["versions"][0]["builds"][f"cp311 {PLAT}"]

    # image A alone: the missing header counts at once; the timeout waits for its retry
    assert pending(farm_db, "cp311") == ["slow"]
    assert farm_db.image_holds(("cp311", PLAT), [("nohdr", "1.0"), ("slow", "1.0")]) == {
        ("nohdr", "1.0"): {image_a}}
    assert [(f["package"], f["outcome"]) for f in farm_db.failures()] == [
        ("slow", "retrying"), ("nohdr", "counts")]
    assert cell("nohdr")["status"] == "failed" and cell("slow")["status"] == "retrying"
    # image B: it may have the header (never A again: the holds still name it)
    assert farm_db.register_image(image_b, ("cp311", PLAT), "Debian 12")
    assert pending(farm_db, "cp311") == ["nohdr", "slow"]
    assert not farm_db.get_versions("nohdr")["1.0"]["built"]
    assert farm_db.image_holds(("cp311", PLAT), [("nohdr", "1.0")]) == {("nohdr", "1.0"): {image_a}}
    assert cell("nohdr")["status"] == "retrying" and "another image" in cell("nohdr")["reason"]
    assert "another builder" in cell("slow")["reason"]
    assert set(farm_db.builder_images(("cp311", PLAT))) == {image_a, image_b}
    # the operator's rebuild: its attempts go, and with them every hold
    assert farm_db.remove_builds("nohdr", "1.0") == 1
    assert farm_db.image_holds(("cp311", PLAT), [("nohdr", "1.0")]) == {}
