"""The build policy: SPECs parsed once, the rule, and the queue that follows it."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from farm import host_target

from piwheels.build_policy import (
    PRERELEASE_REASON, BuildPolicy, Release, parse_policy, policy_reasons,
)
from piwheels.db_policy import UNCHANGED
from piwheels.errors import InvalidPolicy, UnknownPackage

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# --- parsing ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, policy", [
    ("all", BuildPolicy("all")),
    (" ALL ", BuildPolicy("all")),
    ("newest:1", BuildPolicy("newest", newest=1)),
    ("newest: 12", BuildPolicy("newest", newest=12)),
    ("since:2025-06-30", BuildPolicy("since", since=date(2025, 6, 30))),
    ("versions:1.0,2.0.0rc1, 1.0", BuildPolicy("versions", versions=("1.0", "2.0.0rc1"))),
    ("versions:1.0.0-RC1", BuildPolicy("versions", versions=("1.0.0rc1",))),
])
def test_specs_parse_and_round_trip(spec, policy):
    assert parse_policy(spec) == policy
    assert parse_policy(policy.spec) == policy


@pytest.mark.parametrize("spec, message", [
    ("latest", "unknown build policy 'latest'; use all, newest:N"),
    ("", "empty build policy"),
    ("all:3", "unknown build policy"),
    ("newest", "unknown build policy"),
    ("newest:0", "N must be at least 1"),
    ("newest:-2", "N must be at least 1"),
    ("newest:two", "N must be a whole number"),
    ("since:2025-13-01", "'2025-13-01' is not a date (YYYY-MM-DD)"),
    ("since:yesterday", "is not a date"),
    ("versions:", "names no versions"),
    ("versions:1.0,not a version", "'not a version' is not a valid version"),
])
def test_bad_specs_get_one_line(spec, message):
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_descriptions():
    assert parse_policy("newest:1").describe() == "the newest 1 release"
    assert parse_policy("newest:3").describe() == "the newest 3 releases"
    assert parse_policy("since:2025-01-02").describe() == "releases since 2025-01-02"
    assert parse_policy("versions:1.0,1.1").describe() == "only versions 1.0, 1.1"
    assert parse_policy("all").describe() == "every release"


# --- the rule ---------------------------------------------------------------------

def releases(*specs):
    """Release objects from (version, days before T0[, yanked])."""
    return [Release(v, T0 - timedelta(days=days), *rest) for v, days, *rest in specs]


def test_newest_orders_by_version_not_upload_time():
    # 1.10 was uploaded before 1.9 (a backport): still the newest by version
    rs = releases(("1.9", 1), ("1.10", 5), ("1.2", 30))
    assert policy_reasons(parse_policy("newest:1"), False, rs) == {
        "1.10": None,
        "1.9": "farm policy builds the newest 1 release",
        "1.2": "farm policy builds the newest 1 release"}
    assert [v for v, r in policy_reasons(parse_policy("newest:2"), False, rs).items()
            if r is None] == ["1.9", "1.10"]


def test_prereleases_and_yanked():
    rs = releases(("2.0rc1", 0), ("2.0.dev3", 0), ("1.1", 2, True), ("1.0", 5))
    off = policy_reasons(parse_policy("newest:1"), False, rs)
    # pre-releases are left out; the yanked one is not counted, so 1.0 is the newest
    assert off == {"2.0rc1": PRERELEASE_REASON, "2.0.dev3": PRERELEASE_REASON,
                   "1.1": None, "1.0": None}
    on = policy_reasons(parse_policy("newest:1"), True, rs, "project")
    assert on["2.0rc1"] is None
    assert on["1.0"] == on["2.0.dev3"] == "project policy builds the newest 1 release"
    assert policy_reasons(parse_policy("all"), False, rs)["2.0rc1"] == PRERELEASE_REASON
    assert set(policy_reasons(parse_policy("all"), True, rs).values()) == {None}


def test_unparseable_version_is_never_newest():
    rs = [Release("not-a-version", T0), Release("0.1", T0 - timedelta(days=400))]
    verdict = policy_reasons(parse_policy("newest:1"), False, rs)
    assert verdict == {"not-a-version": "farm policy builds the newest 1 release", "0.1": None}


def test_since_and_versions():
    rs = releases(("3.0", 0), ("2.0", 10), ("1.0rc1", 10), ("1.0", 400))
    since = policy_reasons(parse_policy("since:2025-12-01"), False, rs)
    assert since == {"3.0": None, "2.0": None, "1.0rc1": PRERELEASE_REASON,
                     "1.0": "farm policy builds releases since 2025-12-01"}
    # explicitly named versions are built, pre-release or not
    listed = policy_reasons(parse_policy("versions:1.0rc1,3.0"), False, rs)
    assert listed == {"3.0": None, "1.0rc1": None,
                      "2.0": "farm policy builds only versions 1.0rc1, 3.0",
                      "1.0": "farm policy builds only versions 1.0rc1, 3.0"}


# --- in the database: the stored verdict and the queue ------------------------------

@pytest.fixture
def farm_db(db):
    db.add_build_target(host_target("cp311"))
    return db


def add(db, name, *versions_days):
    db.add_package(name)
    for version, days in versions_days:
        db.add_version(name, version, released=T0 - timedelta(days=days))


def queued(db):
    return sorted(db.pending_builds(host_target("cp311"), 100))


def reasons(db, name):
    return {v: d["policy_reason"] for v, d in db.get_versions(name).items()}


def test_queue_follows_the_farm_policy(farm_db):
    db = farm_db
    add(db, "six", ("1.16.0", 1), ("1.15.0", 300), ("1.17.0b1", 0))
    add(db, "idna", ("3.7", 2), ("3.6", 100))
    # default: every release but pre-releases
    assert queued(db) == [("idna", "3.6"), ("idna", "3.7"), ("six", "1.15.0"), ("six", "1.16.0")]
    assert reasons(db, "six")["1.17.0b1"] == "pre-release"

    changed = db.set_farm_policy(parse_policy("newest:1"))
    assert changed == {"six", "idna"}
    assert queued(db) == [("idna", "3.7"), ("six", "1.16.0")]
    assert reasons(db, "six")["1.15.0"] == "farm policy builds the newest 1 release"
    assert db.farm_policy() == (parse_policy("newest:1"), False)

    # a new release arrives: it is the newest now, and the old one drops out
    db.add_version("idna", "3.8", released=T0)
    assert queued(db) == [("idna", "3.8"), ("six", "1.16.0")]
    db.add_releases([("six", "1.16.1", T0, True)])
    assert queued(db) == [("idna", "3.8"), ("six", "1.16.1")]

    db.set_farm_policy(prereleases=True)
    assert ("six", "1.17.0b1") in queued(db)
    db.set_farm_policy(parse_policy("since:2025-12-15"), prereleases=False)
    assert queued(db) == [("idna", "3.7"), ("idna", "3.8"), ("six", "1.16.0"),
                          ("six", "1.16.1")]
    assert db.set_farm_policy(parse_policy("since:2025-12-15")) == set()  # nothing changed


def test_yanking_the_newest_puts_the_next_one_in(farm_db):
    db = farm_db
    db.set_farm_policy(parse_policy("newest:1"))
    add(db, "pkg", ("2.0", 1), ("1.0", 10))
    assert queued(db) == [("pkg", "2.0")]
    db.yank_version("pkg", "2.0", "broken")
    assert queued(db) == [("pkg", "1.0")]
    db.unyank_version("pkg", "2.0")
    assert queued(db) == [("pkg", "2.0")]
    db.remove_version("pkg", "2.0")
    assert queued(db) == [("pkg", "1.0")]


def test_project_policy_overrides_the_farm(farm_db):
    db = farm_db
    db.set_farm_policy(parse_policy("newest:1"))
    add(db, "numpy", ("2.0.0", 1), ("1.26.4", 50), ("1.26.3", 60), ("2.1.0rc1", 0))
    add(db, "other", ("2.0", 1), ("1.0", 50))
    db.set_project_policy("numpy", policy=parse_policy("versions:1.26.3,2.1.0rc1"))
    assert queued(db) == [("numpy", "1.26.3"), ("numpy", "2.1.0rc1"), ("other", "2.0")]
    assert reasons(db, "numpy")["2.0.0"] == "project policy builds only versions 1.26.3, 2.1.0rc1"
    db.set_project_policy("numpy", policy=parse_policy("newest:2"), prereleases=True)
    assert db.project_policy("numpy") == (parse_policy("newest:2"), True)
    assert [v for p, v in queued(db) if p == "numpy"] == ["2.0.0", "2.1.0rc1"]
    # back to the farm's: its policy and its pre-release switch
    db.set_project_policy("numpy", policy=None, prereleases=None)
    assert [v for p, v in queued(db) if p == "numpy"] == ["2.0.0"]
    assert db.project_policy("numpy") == (None, None)
    # the farm's switch is inherited until the project says otherwise
    db.set_project_policy("numpy", policy=UNCHANGED, prereleases=True)
    assert [v for p, v in queued(db) if p == "numpy"] == ["2.1.0rc1"]


def test_bad_project_policy_changes_nothing(farm_db):
    db = farm_db
    add(db, "pkg", ("1.0", 1))
    with pytest.raises(InvalidPolicy, match="pkg has no release 9.9"):
        db.set_project_policy("pkg", policy=parse_policy("versions:1.0,9.9"))
    assert db.project_policy("pkg") == (None, None)
    with pytest.raises(UnknownPackage):
        db.set_project_policy("nope", policy=parse_policy("all"))


def test_configured_policy_at_start(farm_db):
    db = farm_db
    add(db, "pkg", ("2.0", 1), ("1.0", 10))
    # first start: the configuration applies
    assert "newest:1 (from the configuration)" in \
        db.apply_configured_policy(parse_policy("newest:1"), False)
    assert queued(db) == [("pkg", "2.0")]
    # changed at run time, restarted with the same configuration: the change stays
    db.set_farm_policy(parse_policy("all"))
    message = db.apply_configured_policy(parse_policy("newest:1"), False)
    assert "all, set at run time, stays in force" in message and "newest:1" in message
    assert db.farm_policy()[0] == parse_policy("all")
    assert len(queued(db)) == 2
    # the configuration changed: it replaces the run-time setting
    assert "newest:2 with pre-releases (from the configuration)" in \
        db.apply_configured_policy(parse_policy("newest:2"), True)
    assert db.farm_policy() == (parse_policy("newest:2"), True)
    assert "as configured" in db.apply_configured_policy(parse_policy("newest:2"), True)


def test_excluded_releases_leave_the_buildable_index(farm_db, master_dsn):
    """The verdict is a column the partial index filters on, so a farm building only
    the newest release does not walk the history it will never build."""
    db = farm_db
    for n in range(30):
        add(db, f"p{n}", *[(f"1.{k}", k) for k in range(10)])
    db.set_farm_policy(parse_policy("newest:1"))
    import sqlalchemy as sa
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        in_index = conn.exec_driver_sql(
            "SELECT count(*) FROM versions WHERE has_sdist AND NOT built AND NOT yanked "
            "AND skip_reason IS NULL AND policy_reason IS NULL").scalar()
        predicate = conn.exec_driver_sql(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
            "WHERE indexrelid = 'versions_buildable'::regclass").scalar()
    engine.dispose()
    assert in_index == 30 and len(queued(db)) == 30
    assert "policy_reason IS NULL" in predicate


def test_catch_up_weighs_new_releases(farm_db):
    """Releases from the change feed get their verdicts on arrival; under a policy
    that weighs each release on its own, only the new ones are looked at."""
    db = farm_db
    db.add_releases([("New-Pkg", "1.0b1", T0, True), ("New-Pkg", "0.9", T0, False)])
    assert reasons(db, "new-pkg") == {"1.0b1": "pre-release", "0.9": None}
    db.yank_version("new-pkg", "0.9")
    # seen again, now with an sdist: the release keeps its verdict and its yank
    db.add_releases([("new-pkg", "0.9", T0, True), ("new-pkg", "1.0", T0, True)])
    assert reasons(db, "new-pkg") == {"1.0b1": "pre-release", "0.9": None, "1.0": None}
    assert db.get_versions("new-pkg")["0.9"]["has_sdist"]
    assert queued(db) == [("new-pkg", "1.0")]
    db.set_project_policy("new-pkg", policy=parse_policy("since:2026-01-02"))
    db.add_releases([("new-pkg", "1.1", T0 + timedelta(days=2), True)])
    assert queued(db) == [("new-pkg", "1.1")]


def test_a_transaction_weighs_each_project_once_at_its_end(farm_db):
    """The follower records a project release by release in one transaction: under
    newest:N the project is weighed when the transaction ends, and rightly."""
    db = farm_db
    db.set_farm_policy(parse_policy("newest:1"))
    db.add_package("many")
    with db.transaction():
        for n in range(50):
            db.add_version("many", f"1.{n}", released=T0 - timedelta(days=50 - n))
        db.yank_version("many", "1.49")
    assert queued(db) == [("many", "1.48")]
    assert reasons(db, "many")["1.0"] == "farm policy builds the newest 1 release"


def test_a_change_left_unweighed_is_weighed_at_the_next_start(farm_db):
    """piw-control's change is weighed by the build queue; if the master stopped
    before that, its next start does it."""
    db = farm_db
    add(db, "pkg", ("2.0", 1), ("1.0", 10))
    db.apply_configured_policy(parse_policy("all"), False)
    db.set_farm_policy(parse_policy("newest:1"), weigh=False)
    assert len(queued(db)) == 2  # not weighed yet
    assert "set at run time, stays in force" in \
        db.apply_configured_policy(parse_policy("all"), False)
    assert queued(db) == [("pkg", "2.0")]
    db.set_project_policy("pkg", policy=parse_policy("versions:1.0"), weigh=False)
    assert db.apply_policies(["pkg"]) == {"pkg"}
    assert queued(db) == [("pkg", "1.0")]


def test_reason_limit_matches_the_column(db):
    from piwheels.build_policy import MAX_REASON_LENGTH
    assert db.t["versions"].c.policy_reason.type.length == MAX_REASON_LENGTH
    long_list = parse_policy("versions:" + ",".join(f"1.{n}" for n in range(100)))
    (reason,) = set(policy_reasons(long_list, False, releases(("9.9", 0))).values())
    assert len(reason) == MAX_REASON_LENGTH
