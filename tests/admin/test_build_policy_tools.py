"""The build policy through the real tools: piw-master's options and piw-control.

A real piw-master subprocess; the tests check the database, what the master's
slave driver holds (its snapshot), and the published project pages.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from farm import host_target
from test_admin_tools import ABI, ok, project_json, refused, tool, wait_json

from piwheels.build_policy import parse_policy
from piwheels.tags import Target

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def add_releases(db, name, *versions):
    db.add_package(name)
    for age, version in enumerate(versions):
        db.add_version(name, version, released=T0 - timedelta(days=age))


def queued(farm) -> int:
    """How many builds the master's slave driver holds for ABI on this machine's
    platform (its counts are keyed "abi platform")."""
    key = str(Target(*host_target(ABI)))
    return farm.snapshot()["master"].get("slave_driver", {}).get("queued", {}).get(key, 0)


def test_policy_from_options_and_at_run_time(farm, db):
    db.add_build_target(host_target(ABI))
    add_releases(db, "piw-six", "1.17.0b1", "1.16.0", "1.15.0", "1.14.0")
    add_releases(db, "piw-idna", "3.7", "3.6")
    # no periodic recalculation: whatever changes the queue is the policy change itself
    master = farm.start_master("--build-policy", "newest:1", "--queue-interval", "3600")
    assert "build policy newest:1 (from the configuration)" in master.log()
    assert sorted(db.pending_builds(host_target(ABI), 10)) == [("piw-idna", "3.7"), ("piw-six", "1.16.0")]
    farm.wait(lambda: queued(farm) == 2, 20, "the first queue in the slave driver")
    assert "the farm builds the newest 1 release (newest:1), without pre-releases" in \
        ok(tool(farm, "piw-control", "build-policy"))

    # bad input: one line, non-zero, nothing changed (checked by the tool, and by the master)
    for args, message in [
        (["build-policy", "latest"], "unknown build policy 'latest'"),
        (["build-policy", "since:2025-02-30"], "'2025-02-30' is not a date"),
        (["build-policy", "newest:0"], "N must be at least 1"),
        (["build-policy", "versions:9.9", "--project", "piw-six"], "piw-six has no release 9.9"),
        (["build-policy", "all", "--project", "no-such-project"], "unknown package"),
    ]:
        assert message in refused(tool(farm, "piw-control", *args))
    assert db.farm_policy() == (parse_policy("newest:1"), False)
    assert db.project_policy("piw-six") == (None, None)
    bad = tool(farm, "piw-control", "build-prereleases", "maybe")
    assert "build-prereleases takes one of on, off, farm" in refused(bad)

    # a farm-wide change: the slave driver's queue follows within seconds
    started = time.monotonic()
    out = ok(tool(farm, "piw-control", "build-policy", "newest:2"))
    assert "the farm builds the newest 2 releases (newest:2)" in out
    assert "until the configured build-policy changes" in out
    farm.wait(lambda: queued(farm) == 4, 10, "the queue after newest:2")
    assert time.monotonic() - started < 5
    wait_json(farm, "piw-six", lambda d: [v["not_built"] for v in d["versions"]] == [
        "pre-release", None, None, "farm policy builds the newest 2 releases"],
        "the reasons on the project page")

    # a project's own policy and pre-release switch
    out = ok(tool(farm, "piw-control", "build-policy", "versions:1.14.0", "--project", "PIW_Six"))
    assert "piw-six builds only version 1.14.0 (versions:1.14.0)" in out
    farm.wait(lambda: queued(farm) == 3, 10, "the queue after the project's policy")
    assert sorted(db.pending_builds(host_target(ABI), 10)) == [
        ("piw-idna", "3.6"), ("piw-idna", "3.7"), ("piw-six", "1.14.0")]
    ok(tool(farm, "piw-control", "build-policy", "newest:1", "--project", "piw-six"))
    out = ok(tool(farm, "piw-control", "build-prereleases", "on", "--project", "piw-six"))
    assert "the build queue follows in seconds" in out
    farm.wait(lambda: ("piw-six", "1.17.0b1") in db.pending_builds(host_target(ABI), 10), 10,
              "the project's pre-release in the queue")
    wait_json(farm, "piw-six", lambda d: d["versions"][1]["not_built"] ==
              "project policy builds the newest 1 release", "the project's reason")
    out = ok(tool(farm, "piw-control", "build-prereleases", "farm", "--project", "piw-six"))
    assert "without pre-releases as the farm does" in out
    ok(tool(farm, "piw-control", "build-policy", "farm", "--project", "piw-six"))
    assert db.project_policy("piw-six") == (None, None)
    assert "'farm' goes with --project" in tool(farm, "piw-control", "build-policy",
                                                "farm").stderr

    # a restart with the same configuration keeps the run-time change...
    farm.master.stop()
    master = farm.start_master("--build-policy", "newest:1", "--queue-interval", "3600")
    assert "build policy newest:2, set at run time, stays in force" in master.log()
    assert db.farm_policy()[0] == parse_policy("newest:2")
    # ...and a changed configuration replaces it
    farm.master.stop()
    master = farm.start_master("--build-policy", "all", "--build-prereleases")
    assert "build policy all with pre-releases (from the configuration)" in master.log()
    assert len(db.pending_builds(host_target(ABI), 10)) == 6
    assert project_json(farm, "piw-six") is not None


@pytest.mark.parametrize("spec, message", [
    ("newest:0", "N must be at least 1"),
    ("since:2025-1-1x", "is not a date"),
    ("everything", "unknown build policy 'everything'"),
])
def test_master_refuses_a_bad_configured_policy(master_dsn, tmp_path, spec, message):
    result = subprocess.run(
        [str(BIN / "piw-master"), "--dsn", master_dsn, "--output-path", str(tmp_path / "out"),
         "--pypi-simple", "http://127.0.0.1:9/simple/", "--control-address",
         f"ipc://{tmp_path}/control", "--status-address", f"ipc://{tmp_path}/status"],
        env={"PIW_BUILD_POLICY": spec, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --build-policy"), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()
