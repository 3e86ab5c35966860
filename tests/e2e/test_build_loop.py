"""The build loop end to end: a real piw-master, real piw-slaves, real pip builds.

Each test starts the master and slaves as subprocesses on loopback ports,
adds releases to the database, serves their sdists from a local index, and
checks what lands in the database and the output directory.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path

import pytest
from farm import Farm, builds_of, pyenv_python, host_target

pytestmark = pytest.mark.slow



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_temp_files(farm: Farm) -> bool:
    transfers = farm.output / ".transfers"
    return not transfers.exists() or not any(transfers.iterdir())


def test_two_abis_pure_once_c_extension_per_abi(farm, db, release):
    release("pure-thing", kind="pure")
    release("c-thing", kind="c_ext")
    farm.start_master()
    farm.start_slave("py311", pyenv_python("11"))
    farm.start_slave("py312", pyenv_python("12"))

    farm.wait(lambda: len(builds_of(db, "c-thing")) == 2 and builds_of(db, "pure-thing"),
             240, "both packages built")
    time.sleep(2)  # give a wrong second build of the pure package the chance to appear

    (pure,) = builds_of(db, "pure-thing")
    assert pure.status == "success"
    (pure_file,) = pure.files
    assert pure_file.filename == "pure_thing-1.0-py3-none-any.whl"

    c_builds = builds_of(db, "c-thing")
    assert sorted(b.target for b in c_builds) == [host_target("cp311"), host_target("cp312")]
    assert all(b.status == "success" for b in c_builds)
    c_files = sorted(f.filename for b in c_builds for f in b.files)
    assert [name.split("-")[2] for name in c_files] == ["cp311", "cp312"]

    for build in [pure, *c_builds]:
        for f in build.files:
            path = farm.output / "simple" / build_package(f.filename) / f.filename
            assert sha256(path) == f.sha256
            assert path.stat().st_size == f.size
            metadata = path.with_name(f.filename + ".metadata")
            assert hashlib.sha256(metadata.read_bytes()).hexdigest() == f.metadata_sha256
    for abi in ("cp311", "cp312"):
        assert db.pending_builds(host_target(abi), 10) == []
    assert no_temp_files(farm)


def build_package(filename: str) -> str:
    return filename.split("-")[0].replace("_", "-")


def test_slave_killed_mid_build_is_replaced(farm, db, release):
    release("slow-thing", setup_body="import time\ntime.sleep(3)\n")
    farm.start_master()
    first = farm.start_slave("doomed", pyenv_python("11"))
    first.wait_log("building slow-thing 1.0", 60)
    first.kill()
    farm.start_slave("rescuer", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "slow-thing"), 120, "the build to be recorded")
    (build,) = builds_of(db, "slow-thing")
    assert (build.status, build.slave_label) == ("success", "rescuer")
    assert "dropped" in farm.master.log()
    assert no_temp_files(farm)


def test_slave_killed_mid_transfer_is_replaced(farm, db, release):
    # 24 MB of incompressible data pulled in 8 KiB chunks, one at a time
    release("big-thing", data_bytes=24 * 1024 * 1024)
    farm.start_master("--chunk-size", "8192", "--transfer-window", "1")
    first = farm.start_slave("doomed", pyenv_python("11"))
    transfers = farm.output / ".transfers"
    farm.wait(lambda: transfers.exists() and any(transfers.glob("*.part")), 120,
             "a transfer to start")
    first.kill()
    farm.wait(lambda: no_temp_files(farm), 30, "the half-done transfer to be removed")
    assert not list((farm.output / "simple").glob("big-thing/*.whl"))
    farm.start_slave("rescuer", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "big-thing"), 180, "the build to be recorded")
    (build,) = builds_of(db, "big-thing")
    assert (build.status, build.slave_label) == ("success", "rescuer")
    (f,) = build.files
    assert sha256(farm.output / "simple" / "big-thing" / f.filename) == f.sha256
    assert no_temp_files(farm)


def test_timeout_and_memory_limit_then_next_build(farm, db, release):
    release("sleeper", setup_body=(
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        while True: time.sleep(1)\n"
        "while True: time.sleep(1)\n"
    ))
    release("hog", setup_body=(
        "hoard = []\n"
        "while True: hoard.append(bytearray(64 * 1024 * 1024))\n"
    ))
    release("fine")
    farm.start_master()
    farm.start_slave("limited", pyenv_python("11"), "--timeout", "15", "--memory-limit", "1024")
    farm.wait(lambda: all(builds_of(db, p) for p in ("sleeper", "hog", "fine")), 240,
             "all three builds recorded")
    (sleeper,) = builds_of(db, "sleeper")
    (hog,) = builds_of(db, "hog")
    (fine,) = builds_of(db, "fine")
    assert sleeper.status == "failed" and "timed out" in sleeper.reason
    assert hog.status == "failed"
    assert fine.status == "success"
    log = db.get_build_log(hog.build_id)
    assert "MemoryError" in log or "memory" in log.lower()


def log_time(log: str, text: str) -> datetime:
    """When the first line of a daemon's log (LOG_FORMAT) that contains *text* was written."""
    line = next(line for line in log.splitlines() if text in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_an_idle_slave_is_parked_and_handed_a_queued_job_at_once(farm, db, release):
    """With a minute's --sleep-interval, an idle slave still starts a job within
    a fraction of a second of its being queued: it is parked, not put to sleep."""
    farm.start_master("-v", "--sleep-interval", "60")  # -v -v: the queue pages are logged
    slave = farm.start_slave("py311", pyenv_python("11"))
    farm.wait(lambda: [s["state"] for s in farm.snapshot()["slaves"]] == ["parked"], 60,
              "the idle slave parked")
    release("parked-thing", kind="pure")  # the next queue refresh (every second) has it
    slave.wait_log("building parked-thing 1.0", 20)
    queued = log_time(farm.master.log(), "QUEUE: 1 of 1 builds for cp311")
    started = log_time(slave.log(), "building parked-thing 1.0")
    assert (started - queued).total_seconds() < 0.5, (queued, started)
    farm.wait(lambda: [b.status for b in builds_of(db, "parked-thing")] == ["success"], 120,
              "the build recorded")


def test_a_release_held_back_for_one_abi_is_offered_the_moment_the_other_build_ends(
        farm, db, release):
    """A C extension both ABIs need is built by one slave at a time; the other
    slave gets it as soon as the first build ends, not at the next
    recalculation of the queue (a minute away here)."""
    release("held-thing", kind="c_ext")
    farm.start_master("--queue-interval", "60", "--sleep-interval", "60")
    slaves = [farm.start_slave("py311", pyenv_python("11")),
              farm.start_slave("py312", pyenv_python("12"))]
    farm.wait(lambda: len(builds_of(db, "held-thing")) == 2, 240, "both builds recorded")
    assert sorted(b.target for b in builds_of(db, "held-thing")) \
        == [host_target("cp311"), host_target("cp312")]
    assert all(b.status == "success" for b in builds_of(db, "held-thing"))
    ended = min(log_time(s.log(), "built held-thing 1.0") for s in slaves)
    second = max(log_time(s.log(), "building held-thing 1.0") for s in slaves)
    assert 0 < (second - ended).total_seconds() < 1.0, (ended, second)
