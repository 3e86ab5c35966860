"""Publishing is all or nothing: a real piw-master killed (SIGKILL) while it
publishes, or started on an output tree and database that a crash left
disagreeing, comes back consistent and builds what it lost again.

The inconsistent states a crash can leave are also made by hand, so each is
met for certain: a wheel in the index without a row (killed after the rename
but before the commit, as the old order allowed), a row without its wheel
(killed after the commit but before the rename), staged and temp files.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

import pytest
import sqlalchemy as sa
from consistency import assert_consistent, problems, wait_consistent
from farm import HOST_PLATFORM, builds_of, host_target, pyenv_python, wait_for
from index_publisher import Publisher
from wheel_craft import craft_wheel

from piwheels.index_pages import Site
from piwheels.wheel_facts import inspect_wheel

pytestmark = pytest.mark.slow

WHEEL = "{}-1.0-py3-none-any.whl"


def wheel_name(package: str) -> str:
    return WHEEL.format(package.replace("-", "_"))


def built(db, package: str):
    """The successful build of *package* (None before there is one)."""
    return next((b for b in builds_of(db, package) if b.status == "success"), None)


def delete_builds(superuser_dsn: str, package: str) -> None:
    engine = sa.create_engine(superuser_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM builds WHERE package = :p"), {"p": package})
    finally:
        engine.dispose()


def publish_one(farm, db, release, package: str):
    """Build and publish *package* on a real farm; its build."""
    release(package, kind="pure")
    if farm.master is None or farm.master.proc.poll() is not None:
        farm.start_master()
    if not farm.slaves:
        farm.start_slave("steady", pyenv_python("11"))
    build = farm.wait(lambda: built(db, package), 120, f"{package} to be built")
    wait_consistent(farm.output, farm.master_dsn)
    return build


def test_a_wheel_without_a_row_is_removed_at_start_and_built_again(
        farm, db, release, schema_database):
    first = publish_one(farm, db, release, "orphaned")
    wheel = farm.output / "simple" / "orphaned" / wheel_name("orphaned")
    assert farm.master.stop() == 0
    # what the old order left when the master died between the rename and the commit
    delete_builds(schema_database["superuser"], "orphaned")
    assert wheel.is_file()
    found = problems(farm.output, farm.master_dsn)  # (the check sees it)
    assert f"{wheel} has no row" in found
    assert f"{wheel.parent / 'index.json'} lists {wheel.name}, which has no row" in found
    master = farm.start_master()
    log = master.log()
    assert (f"moved simple/orphaned/{wheel_name('orphaned')} (served) to .orphaned/orphaned: "
            "no database row") in log
    assert "1 wheel(s) without a row set aside in .orphaned/" in log
    aside = farm.output / ".orphaned" / "orphaned" / wheel_name("orphaned")
    assert hashlib.sha256(aside.read_bytes()).hexdigest() == first.files[0].sha256
    assert aside.with_name(aside.name + ".metadata").is_file()
    again = farm.wait(lambda: built(db, "orphaned"), 120, "orphaned to be built again")
    assert again.build_id != first.build_id
    wait_consistent(farm.output, farm.master_dsn)
    (f,) = again.files
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == f.sha256


def test_a_row_without_its_wheel_is_requeued_at_start(farm, db, release):
    first = publish_one(farm, db, release, "vanished")
    wheel = farm.output / "simple" / "vanished" / wheel_name("vanished")
    assert farm.master.stop() == 0
    # what a crash between the commit and the rename leaves
    wheel.unlink()
    found = problems(farm.output, farm.master_dsn)  # (the check sees it)
    assert f"row {wheel.name} (vanished) has no file" in found
    assert f"{wheel.parent / 'index.json'} lists {wheel.name}, which is not there" in found
    master = farm.start_master()
    assert (f"re-queued vanished 1.0 for cp311 {HOST_PLATFORM} (deleted build {first.build_id}): "
            f"{wheel_name('vanished')} is missing") in master.log()
    again = farm.wait(lambda: built(db, "vanished"), 120, "vanished to be built again")
    assert again.build_id != first.build_id
    assert [b.build_id for b in builds_of(db, "vanished")] == [again.build_id]
    wait_consistent(farm.output, farm.master_dsn)
    assert wheel.is_file()


SITE = Site(name="Chaos farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")


def record_by_hand(db, dsn, output, wheels: dict) -> None:
    """Publish crafted wheels ({package: wheel path}) through the real recorder and
    index writer, as a build on cp311 each, and wait until they are served."""
    db.add_build_target(host_target("cp311"))
    transfers = output / ".transfers"
    transfers.mkdir(parents=True, exist_ok=True)
    publisher = Publisher(dsn, output, SITE, transfers)
    try:
        for n, (package, wheel) in enumerate(wheels.items()):
            db.add_package(package)
            db.add_version(package, "1.0", has_sdist=True)
            send_record(publisher, package, "cp311", wheel, transfers / f"{n}-0123456789ab-{wheel.name}")
        wait_for(lambda: publisher.check() or all(built(db, p) for p in wheels), 15,
                 "the wheels recorded")
        wait_consistent(output, dsn)
    finally:
        publisher.stop()


def send_record(publisher, package, abi, wheel, received) -> None:
    """What the slave driver sends once *wheel* has arrived (as *received*)."""
    received.write_bytes(wheel.read_bytes())
    facts = inspect_wheel(wheel).to_dict()
    publisher.records.send("RECORD", {
        "package": package, "version": "1.0", "abi_tag": abi, "platform_tag": HOST_PLATFORM,
        "slave_label": "chaos", "builder": "chaos", "started": time.time(), "duration_s": 1.0,
        "status": "success", "reason": None, "log": "built\n",
        "files": [{**facts, "path": str(received)}],
    })


def test_a_wheel_of_the_wrong_size_or_without_metadata_is_requeued(farm, db, tmp_path):
    crafted = {package: craft_wheel(tmp_path, wheel_name(package), name=package)
               for package in ("truncated", "bare", "intact")}
    record_by_hand(db, farm.master_dsn, farm.output, crafted)
    truncated, bare = built(db, "truncated"), built(db, "bare")
    with open(farm.output / "simple" / "truncated" / wheel_name("truncated"), "r+b") as f:
        f.truncate(10)
    (farm.output / "simple" / "bare" / (wheel_name("bare") + ".metadata")).unlink()
    found = problems(farm.output, farm.master_dsn)  # (the check sees it)
    assert any("is 10 bytes; its row says" in p for p in found)
    assert any(p.endswith(f"{wheel_name('bare')} has no .metadata") for p in found)
    log = farm.start_master().log()
    assert (f"re-queued truncated 1.0 for cp311 {HOST_PLATFORM} (deleted build {truncated.build_id}): "
            f"{wheel_name('truncated')} is 10 bytes, not {truncated.files[0].size}") in log
    assert (f"re-queued bare 1.0 for cp311 {HOST_PLATFORM} (deleted build {bare.build_id}): "
            f"{wheel_name('bare')} has no .metadata") in log
    # the truncated wheel has lost its row: it is set aside, not served
    assert f"moved simple/truncated/{wheel_name('truncated')} (served)" in log
    assert "2 build(s) re-queued, 2 wheel(s) without a row set aside in .orphaned/" in log
    assert builds_of(db, "truncated") == builds_of(db, "bare") == []
    assert built(db, "intact") is not None
    queued = {tuple(pending) for pending in db.pending_builds(host_target("cp311"), 10)}
    assert {("truncated", "1.0"), ("bare", "1.0")} <= queued
    assert ("intact", "1.0") not in queued
    wait_consistent(farm.output, farm.master_dsn)  # their pages no longer list them


def test_staged_and_temp_files_are_removed_at_start(farm, db):
    out = farm.output
    (out / ".transfers").mkdir(parents=True)
    (out / ".transfers" / "3-0123456789ab-x-1.0-py3-none-any.whl").write_bytes(b"verified")
    (out / ".transfers" / "3-0123456789ab-x-1.0-py3-none-any.whl.metadata").write_bytes(b"m")
    (out / ".transfers" / "4-0123456789ab-y-1.0-py3-none-any.whl.part").write_bytes(b"ha")
    (out / "simple" / "x").mkdir(parents=True)
    (out / "simple" / "x" / ".index.html.123.456.tmp").write_bytes(b"<html")
    (out / "simple" / "x" / "x-1.0-py3-none-any.whl.metadata").write_bytes(b"m")
    (out / "simple" / "x" / "x-1.0-py3-none-any.whl").write_bytes(b"no row")
    (out / "logs" / "0000" / "0000").mkdir(parents=True)
    (out / "logs" / "0000" / "0000" / ".0001.txt.gz.9.9.tmp").write_bytes(b"")
    (out / "project").mkdir()
    (out / "project" / ".X.link").symlink_to("x")
    (out / ".withheld" / "x").mkdir(parents=True)
    (out / ".withheld" / "x" / "x-2.0-py3-none-any.whl.metadata").write_bytes(b"m")
    found = problems(out, farm.master_dsn)  # (the check sees them)
    assert len([p for p in found if p.startswith("temp file")]) == 3
    assert len([p for p in found if p.startswith("left in .transfers")]) == 3
    assert len([p for p in found if p.endswith("has no row")]) == 3
    master = farm.start_master()
    log = master.log()
    for line in (
        "moved simple/x/x-1.0-py3-none-any.whl (served) to .orphaned/x: no database row",
        "removed .withheld/x/x-2.0-py3-none-any.whl.metadata: its wheel is missing",
        "removed simple/x/.index.html.123.456.tmp: an interrupted write's temp file",
        "removed logs/0000/0000/.0001.txt.gz.9.9.tmp: an interrupted write's temp file",
        "removed project/.X.link: an interrupted write's temp file",
        "removed .transfers/4-0123456789ab-y-1.0-py3-none-any.whl.part: an interrupted",
        "0 build(s) re-queued, 1 wheel(s) without a row set aside in .orphaned/, "
        "7 stray or temporary file(s) removed",
    ):
        assert line in log, line
    assert not (out / "project" / ".X.link").is_symlink()
    assert (out / ".orphaned" / "x" / "x-1.0-py3-none-any.whl").read_bytes() == b"no row"
    assert_consistent(out, farm.master_dsn)
    # and a clean tree is said to be so
    assert farm.master.stop() == 0
    assert "output and database agree (0 recorded files checked)" in farm.start_master().log()


def test_a_leftover_wheel_never_blocks_a_later_attempt(farm, db, release):
    """A file in the index without a row (a crash's leftover, or anything else that
    put it there while the master ran) is replaced, not taken for a published one."""
    release("blocked", kind="pure")
    farm.start_master()
    leftover = farm.output / "simple" / "blocked" / wheel_name("blocked")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"left by a crash")
    farm.start_slave("steady", pyenv_python("11"))
    build = farm.wait(lambda: builds_of(db, "blocked"), 120, "blocked to be built")
    (build,) = builds_of(db, "blocked")
    assert (build.status, build.reason) == ("success", None)
    wait_consistent(farm.output, farm.master_dsn)
    assert hashlib.sha256(leftover.read_bytes()).hexdigest() == build.files[0].sha256


def test_killed_right_after_a_wheel_is_received(farm, db, release):
    release("interrupted", kind="pure")
    master = farm.start_master()
    farm.start_slave("steady", pyenv_python("11"))
    master.wait_log(f"received {wheel_name('interrupted')}", 120)
    master.kill()
    farm.start_master()
    farm.wait(lambda: built(db, "interrupted"), 120, "interrupted to be published")
    wait_consistent(farm.output, farm.master_dsn)


def test_killed_at_random_moments_of_a_publish_loop(farm, db, release):
    packages = [f"loop-{n}" for n in range(4)]
    for package in packages:
        release(package, kind="pure")
    farm.start_master()
    farm.start_slave("steady", pyenv_python("11"))
    rng = random.Random(int(os.environ.get("PIWHEELS_CHAOS_SEED", time.time_ns())))
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 5.0))
        farm.master.kill()
        farm.start_master()
        # whatever the moment, the restarted master starts from an agreeing state
        assert "Traceback" not in farm.master.log()
    farm.wait(lambda: all(built(db, p) for p in packages), 180, "every package built")
    wait_consistent(farm.output, farm.master_dsn)
    for package in packages:
        assert len([b for b in builds_of(db, package) if b.status == "success"]) == 1


def test_a_refused_insert_leaves_no_file_behind(db, master_dsn, tmp_path):
    """Two builds of one pure wheel (two ABIs) recorded together: the database
    refuses the second file row, and its staged files go, never into the index."""
    output = tmp_path / "output"
    transfers = output / ".transfers"
    transfers.mkdir(parents=True)
    for abi in ("cp311", "cp312"):
        db.add_build_target(host_target(abi))
    db.add_package("piw-craft")
    db.add_version("piw-craft", "1.0", has_sdist=True)
    wheel = craft_wheel(tmp_path)
    publisher = Publisher(master_dsn, output, SITE, transfers)
    try:
        for n, abi in enumerate(("cp311", "cp312")):
            send_record(publisher, "piw-craft", abi, wheel,
                        transfers / f"{n}-0123456789ab-{wheel.name}")
        wait_for(lambda: publisher.check() or len(builds_of(db, "piw-craft")) == 2, 15,
                 "both attempts recorded")
        wait_consistent(output, master_dsn)
        statuses = sorted((b.status, b.abi_tag) for b in builds_of(db, "piw-craft"))
        assert [status for status, _ in statuses] == ["rejected", "success"]
        (rejected,) = [b for b in builds_of(db, "piw-craft") if b.status == "rejected"]
        assert rejected.reason.startswith(("could not record:", "could not publish:"))
        assert not rejected.files
        assert sorted(p.name for p in (output / "simple" / "piw-craft").glob("*.whl*")) == [
            wheel.name, wheel.name + ".metadata"]
    finally:
        publisher.stop()
