"""piw-add --skip / piw-remove over patterns and version lists, against a real master:
a count and a question first, then the change; bad targets change nothing.  And
piw-remove --builds takes the builds' logs out of the output tree too."""

from __future__ import annotations

import os
import pty
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from farm import HOST_PLATFORM, host_target
from test_admin_tools import ABI, ok, refused, tool

from piwheels.index_pages import log_path
from piwheels.records import BuildRecord

pytestmark = pytest.mark.slow

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def on_terminal(farm, answer: str, *args: str) -> subprocess.CompletedProcess:
    """Run an admin tool on a pty and type *answer* at its question."""
    master_fd, slave_fd = pty.openpty()
    try:
        os.write(master_fd, answer.encode() + b"\n")
        return tool(farm, *args, stdin=slave_fd)
    finally:
        os.close(master_fd)
        os.close(slave_fd)


def skips(db, name):
    return {v: d["skip_reason"] for v, d in db.get_versions(name).items()}


def failed_build(db, name, version):
    db.record_build(BuildRecord(
        package=name, version=version, abi_tag=ABI, platform_tag=HOST_PLATFORM,
        slave_label="s", started=T0,
        duration=timedelta(seconds=1), status="failed", log=f"log of {name} {version}\n",
        reason="broke"))


@pytest.fixture
def projects(db):
    db.add_build_target(host_target(ABI))
    for name, versions in (("corp-a", ("1.0", "1.1", "2.0")), ("corp-b", ("1.0",)),
                           ("other", ("1.0",))):
        db.add_package(name)
        for age, version in enumerate(versions):
            db.add_version(name, version, released=T0 - timedelta(days=age))
    return db


def test_skip_by_pattern_and_version_list(farm, projects):
    db = projects
    farm.start_master()

    # no terminal, no -y: refused before anything changes; "n" at the question: the same
    assert "pass -y" in refused(tool(farm, "piw-add", "corp-*", "--skip", "internal"))
    result = on_terminal(farm, "n", "piw-add", "corp-*", "--skip", "internal")
    assert "2 project(s) not to be built: internal: go ahead? [y/N]" in result.stdout
    assert "nothing was changed" in refused(result)
    assert db.get_project("corp-a").skip_reason is None

    result = on_terminal(farm, "y", "piw-add", "corp-*", "--skip", "internal")
    assert "done: 2 project(s) not to be built: internal" in ok(result)
    assert [db.get_project(n).skip_reason for n in ("corp-a", "corp-b", "other")] == \
        ["internal", "internal", None]
    assert db.pending_builds(host_target(ABI), 10) == [("other", "1.0")]
    assert "nothing to change" in ok(tool(farm, "piw-add", "corp-*", "--skip", "internal"))
    assert "2 project(s) to be built again" in ok(tool(farm, "piw-add", "-y", "corp-*",
                                                       "--unskip"))

    # releases by a version pattern, then by a list
    assert "done: 2 release(s) of 1 project(s) not to be built: old" in \
        ok(tool(farm, "piw-add", "-y", "corp-a", "1.*", "--skip", "old"))
    assert skips(db, "corp-a") == {"1.0": "old", "1.1": "old", "2.0": None}
    assert "2 release(s) of 1 project(s) to be built again" in \
        ok(tool(farm, "piw-add", "-y", "corp-a", "1.1,1.0", "--unskip"))
    assert set(skips(db, "corp-a").values()) == {None}

    # bad targets: one line, nothing changed
    for args, message in [
        (["corp-a", "1.0,9.9", "--skip", "x"], "corp-a has no release 9.9"),
        (["nomatch-*", "--skip", "x"], "no project matches 'nomatch-*'"),
        (["corp-a", "3.*", "--skip", "x"], "no release of corp-a matches '3.*'"),
        (["corp-*", "9.9,", "--skip", "x"], "has no release 9.9"),
    ]:
        assert message in refused(tool(farm, "piw-add", "-y", *args))
    assert set(skips(db, "corp-a").values()) == {None}
    bad = tool(farm, "piw-add", "-y", "corp-*", "--alias", "x")
    assert "goes with --skip or --unskip only" in refused(bad)


def test_remove_by_pattern_takes_wheels_and_logs(farm, projects):
    db = projects
    for name, version in (("corp-a", "1.0"), ("corp-a", "2.0"), ("corp-b", "1.0"),
                          ("other", "1.0")):
        failed_build(db, name, version)
    farm.start_master()
    logs = farm.output / "logs"
    ids = {(v.version, p): b.build_id for p in ("corp-a", "corp-b", "other")
           for v in db.get_project(p).versions for b in v.builds}
    for name in ("corp-a", "corp-b", "other"):
        ok(tool(farm, "piw-rebuild", "project", name))
    assert all((logs / log_path(i)).exists() for i in ids.values())

    # one release's builds by a list: its log goes, the other release's stays
    result = on_terminal(farm, "y", "piw-remove", "--builds", "corp-a", "1.0,1.1")
    assert "1 build(s) of 1 project(s) removed with their wheels and logs, to be built " \
        "again: go ahead? [y/N]" in result.stdout
    ok(result)
    assert not (logs / log_path(ids["1.0", "corp-a"])).exists()
    assert (logs / log_path(ids["2.0", "corp-a"])).exists()
    assert ("corp-a", "1.0") in db.pending_builds(host_target(ABI), 10)

    # a single project's builds (no pattern): its logs go too
    out = ok(tool(farm, "piw-remove", "-y", "--builds", "corp-b"))
    assert "removed 1 build(s) of corp-b" in out
    assert not (logs / log_path(ids["1.0", "corp-b"])).exists()

    # whole projects by a pattern: releases, builds and logs gone; the rest stays
    assert "done: 2 project(s) removed with their builds and wheels" in \
        ok(tool(farm, "piw-remove", "-y", "corp-*"))
    assert db.get_project("corp-a") is None and db.get_project("corp-b") is None
    assert not (logs / log_path(ids["2.0", "corp-a"])).exists()
    assert (logs / log_path(ids["1.0", "other"])).exists()
    farm.wait(lambda: not (farm.output / "project" / "corp-a").exists(), 20,
              "the removed project's pages gone")
    assert "no project matches 'corp-*'" in refused(tool(farm, "piw-remove", "-y", "corp-*"))
