"""Slaves clean up after themselves: real piw-slaves, killed mid-build.

The build's setup.py forks a grandchild that changes to /, leaves the session
with setsid(), lets go of the build's output and execs `sleep` with an empty
environment, so nothing it
carries says whose it is; then setup.py itself sleeps.  Each test asserts
that such processes die with the build or the slave, or at the latest when a
slave is started again in the same work dir, and that live builds of another
slave sharing the dir are never touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from farm import Farm, builds_of, pyenv_python, wait_for

from piwheels.slave import processes
from piwheels.slave.work_area import AREA_PREFIX

pytestmark = pytest.mark.slow

ESCAPING_BUILD = """
import os, time
EVIDENCE = {evidence!r}
def note(kind):
    path = os.path.join(EVIDENCE, f"{{kind}}-{{os.getpid()}}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
note("setup")
child = os.fork()
if child == 0:
    os.chdir("/")
    os.setsid()
    if os.fork() == 0:
        note("grandchild")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let go of pip's pipes, or pip waits for it
            os.dup2(null, fd)
        os.execve("/bin/sleep", ["sleep", "600"], {{}})
    os._exit(0)
os.waitpid(child, 0)
time.sleep({sleep_s})
"""


def gone(pid: int) -> bool:
    info = processes.process_info(pid)
    return info is None or info.dead


@pytest.fixture
def evidence(farm: Farm):
    """Where the builds note their pids; whatever they name is killed at the end,
    so that a failing test leaves nothing running."""
    path = farm.work_root / "evidence"
    path.mkdir()
    path.chmod(0o777)  # the build runs as the build user
    yield path
    processes.kill(pids(path, "grandchild") | pids(path, "setup"))


def pids(evidence: Path, kind: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in evidence.glob(f"{kind}-*")
            if not p.name.endswith(".tmp")}


def wait_for_build_processes(farm: Farm, evidence: Path) -> tuple[int, int]:
    farm.wait(lambda: pids(evidence, "grandchild") and pids(evidence, "setup"), 120,
              "the build's processes to start")
    (grandchild,) = pids(evidence, "grandchild")
    (setup,) = pids(evidence, "setup")
    assert os.readlink(f"/proc/{grandchild}/cwd") == "/"
    assert open(f"/proc/{grandchild}/environ", "rb").read() == b""
    return setup, grandchild


def areas(work: Path) -> list[Path]:
    return sorted(work.glob(AREA_PREFIX + "*"))


def test_an_escaped_grandchild_dies_when_its_build_ends(farm, db, release, evidence):
    release("escaper", setup_body=ESCAPING_BUILD.format(evidence=str(evidence), sleep_s=1))
    farm.start_master()
    farm.start_slave("ender", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "escaper"), 120, "the build to be recorded")
    (build,) = builds_of(db, "escaper")
    assert build.status == "success"
    # pip runs setup.py more than once: each run left a grandchild
    grandchildren = pids(evidence, "grandchild")
    assert grandchildren and all(gone(pid) for pid in grandchildren)  # before BUILT
    assert "process(es) a build left behind" in farm.slaves[0].log()


def test_builds_die_with_a_stopped_slave_and_its_area_goes(farm, db, release, evidence):
    release("stopped", setup_body=ESCAPING_BUILD.format(evidence=str(evidence), sleep_s=600))
    farm.start_master()
    slave = farm.start_slave("stopper", pyenv_python("11"))
    setup, grandchild = wait_for_build_processes(farm, evidence)
    work = farm.work_root / "work-stopper"
    assert len(areas(work)) == 1
    assert slave.stop() == 0
    assert gone(setup) and gone(grandchild)
    assert areas(work) == []


def test_a_restarted_slave_kills_what_a_sigkilled_one_left(farm, db, release, evidence):
    release("orphaned", setup_body=ESCAPING_BUILD.format(evidence=str(evidence), sleep_s=600))
    farm.start_master()
    first = farm.start_slave("phoenix", pyenv_python("11"))
    setup, grandchild = wait_for_build_processes(farm, evidence)
    work = farm.work_root / "work-phoenix"
    (old_area,) = areas(work)
    time.sleep(1)  # the slave records its build's processes every 0.2 s
    first.kill()
    time.sleep(0.5)
    # SIGKILL cleans nothing: the build's processes and its directory are still there
    assert not gone(setup) and not gone(grandchild)
    assert old_area.is_dir() and any(old_area.glob("piw-build-*"))
    second = farm.start_slave("phoenix", pyenv_python("11"))
    second.wait_log("removed 1 work area(s) of earlier runs", 60)
    wait_for(lambda: gone(setup) and gone(grandchild), 5, "the leftovers to be killed")
    assert not old_area.exists()
    assert old_area not in areas(work)


def test_two_slaves_sharing_a_dir_leave_each_others_builds_alone(farm, db, release, evidence):
    release("shared", setup_body=ESCAPING_BUILD.format(evidence=str(evidence), sleep_s=600))
    farm.start_master()
    farm.start_slave("first", pyenv_python("11"))
    setup, grandchild = wait_for_build_processes(farm, evidence)
    shared = farm.work_root / "work-first"
    (first_area,) = areas(shared)
    builds = list(first_area.glob("piw-build-*"))
    assert builds
    second = farm.start_slave("second", pyenv_python("11"), "--dir", str(shared))
    farm.wait(lambda: len(areas(shared)) == 2, 60, "the second slave's own area")
    second.wait_log("connected to the master", 60)
    assert "work area(s) of earlier runs" not in second.log()
    assert not gone(setup) and not gone(grandchild)
    assert all(build.is_dir() for build in builds)
    assert second.stop() == 0
    assert areas(shared) == [first_area]  # the second removed only its own
    assert not gone(setup) and not gone(grandchild)
