"""A slave's work area: locked while it lives, swept by the next slave when it is dead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from piwheels.slave import processes
from piwheels.slave.work_area import AREA_PREFIX, LOCK_MARKER, LOCK_NAME, WorkArea, sweep

# A slave that claims an area, records a child, then dies without cleaning up.
DEAD_SLAVE = """
import os, subprocess, sys
from pathlib import Path
from piwheels.slave.work_area import WorkArea
area = WorkArea.claim(Path(sys.argv[1]))
(area.path / "piw-build-x").mkdir()
(area.path / "piw-build-x" / "big").write_bytes(b"x" * 100000)
child = subprocess.Popen(["sleep", "600"], cwd="/", env={}, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
area.record()
print(child.pid, area.path, flush=True)
os._exit(0)
"""


def gone(pid: int) -> bool:
    info = processes.process_info(pid)
    return info is None or info.dead


def wait_gone(pid: int, timeout_s: float = 5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def start_orphan(cwd: Path, *command: str) -> int:
    """*command* (a `sleep`) working in *cwd*, whose parent has exited (so it is
    not ours): its pid."""
    out = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen("
         "sys.argv[2:], cwd=sys.argv[1], env={'PATH': '/usr/bin:/bin'}, "
         "start_new_session=True, stdin=subprocess.DEVNULL, "
         "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)",
         str(cwd), *(command or ("sleep", "600"))],
        capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_live_area_is_left_alone_and_removed_at_close(tmp_path: Path) -> None:
    area = WorkArea.claim(tmp_path)
    assert area.path.name.startswith(AREA_PREFIX)
    (area.path / "piw-build-live").mkdir()
    report = sweep(tmp_path)  # as another slave sharing the dir would
    assert report.areas_removed == [] and (area.path / "piw-build-live").is_dir()
    area.close()
    area.close()
    assert list(tmp_path.iterdir()) == []


def test_a_dead_slaves_area_and_recorded_process_are_removed(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", DEAD_SLAVE, str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.split()
    child, dead_area = int(out[0]), Path(out[1])
    try:
        # nothing of the child says whose it is: only the record does
        assert not gone(child) and os.readlink(f"/proc/{child}/cwd") == "/"
        report = sweep(tmp_path)
        assert report.areas_removed == [dead_area]
        assert child in report.processes_killed
        assert report.bytes_freed >= 100000
        assert wait_gone(child)
        assert not dead_area.exists()
    finally:
        processes.kill([child])


def test_only_what_the_dead_slave_owned_is_killed(tmp_path: Path) -> None:
    bystander_dir = tmp_path / "elsewhere"
    bystander_dir.mkdir()
    bystander = start_orphan(bystander_dir)
    work = tmp_path / "work"
    work.mkdir()
    dead = work / (AREA_PREFIX + "dead")
    dead.mkdir()
    (dead / LOCK_NAME).write_text(LOCK_MARKER + "\n")
    inside = start_orphan(dead)
    # an operator's shell looking around in the dead area: it has a terminal
    script = start_orphan(tmp_path, "script", "-qc", f"cd {dead} && exec sleep 600", "/dev/null")
    wait_for_tty_sleep = time.monotonic() + 5
    while True:
        kids = [p for p in processes.descendants([script]) if p.tty != 0]
        if kids and os.readlink(f"/proc/{kids[-1].pid}/cwd") == str(dead):
            operator = kids[-1].pid
            break
        assert time.monotonic() < wait_for_tty_sleep, "script did not start its command"
        time.sleep(0.05)
    info = processes.process_info(bystander)
    # a record naming the bystander's pid with another start time: a reused pid
    (dead / "processes").write_text(f"{bystander} {info.start_ticks + 1}\n")
    try:
        report = sweep(work)
        assert report.areas_removed == [dead]
        assert report.processes_killed == [inside]
        assert wait_gone(inside)
        assert not gone(bystander) and not gone(operator)
    finally:
        processes.kill([bystander, inside, script, operator])


def test_what_is_not_a_slaves_area_is_never_touched(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / LOCK_NAME).write_text(LOCK_MARKER + "\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / (AREA_PREFIX + "link")).symlink_to(target)   # a symlink, even to a lookalike
    (work / (AREA_PREFIX + "nolock")).mkdir()             # no lock file
    unmarked = work / (AREA_PREFIX + "unmarked")
    unmarked.mkdir()
    (unmarked / LOCK_NAME).write_text("something else\n")  # a lock file without the marker
    (work / "piw-build-old").mkdir()                       # not in the naming scheme
    (work / "piwheels-cache").mkdir()
    (work / (AREA_PREFIX + "file")).write_text("a file")
    before = sorted(p.name for p in work.iterdir())
    report = sweep(work)
    assert report.areas_removed == [] and report.processes_killed == []
    assert sorted(p.name for p in work.iterdir()) == before
    assert (target / LOCK_NAME).exists()
    assert (unmarked / LOCK_NAME).read_text() == "something else\n"


def test_a_removal_cut_short_is_finished(tmp_path: Path) -> None:
    condemned = tmp_path / ".piw-removing-abc"
    (condemned / "piw-build-x").mkdir(parents=True)
    report = sweep(tmp_path)
    assert report.areas_removed == [condemned]
    assert list(tmp_path.iterdir()) == []


def test_a_garbled_record_is_ignored(tmp_path: Path) -> None:
    record = tmp_path / "processes"
    record.write_bytes(b"12 34\nnot a line\n-1 5\n\xff\xfe\n56 78 9\n90 12\n")
    assert processes.read_record(record) == {(12, 34), (90, 12)}
    assert processes.read_record(tmp_path / "missing") == set()


def test_the_record_follows_the_slaves_descendants(tmp_path: Path) -> None:
    area = WorkArea.claim(tmp_path)
    child = subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL)
    try:
        area.record()
        identity = processes.process_info(child.pid).identity
        assert identity in processes.read_record(area.record_path)
        written = area.record_path.stat().st_mtime_ns
        time.sleep(0.05)
        area.record()  # nothing changed: nothing written
        assert area.record_path.stat().st_mtime_ns == written
        child.kill()
        child.wait()
        area.record()
        assert identity not in processes.read_record(area.record_path)
    finally:
        child.kill()
        child.wait()
        # not area.close(): in pytest that would kill every child of the test run
