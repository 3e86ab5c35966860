"""Slaves clean up after themselves: real piw-slaves, killed mid-build.

The build's setup.py forks a grandchild that changes to /, leaves the session
with setsid(), lets go of the build's output and execs `sleep` with an empty
environment, so nothing it carries says whose it is; then setup.py itself
sleeps (as `sleep` too, when it is to hang).  The tests find these processes
from outside by their command lines (a contained build can write nothing the
host sees, and its pids are its own namespace's).  Each test asserts that
such processes die with the build or the slave, or at the latest when a slave
is started again in the same work dir, and that live builds of another slave
sharing the dir are never touched.  Contained builds die with their sandbox;
the uncontained fallback (no bubblewrap) is covered by the SIGKILL test.
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
child = os.fork()
if child == 0:
    os.chdir("/")
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let go of pip's pipes, or pip waits for it
            os.dup2(null, fd)
        os.execve("/bin/sleep", ["sleep", {grandchild!r}], {{}})
    os._exit(0)
os.waitpid(child, 0)
if {hang!r}:
    os.execv("/bin/sleep", ["sleep", {setup!r}])
time.sleep(1)
"""

#: Run a slave without containment (a bubblewrap that is not there).
UNCONTAINED = ("--bwrap", "/nonexistent/bwrap")


def gone(pid: int) -> bool:
    info = processes.process_info(pid)
    return info is None or info.dead


class Tokens:
    """The `sleep` arguments of one test's build processes, unique on this machine."""

    def __init__(self) -> None:
        unique = f"{os.getpid()}{time.monotonic_ns()}"
        self.grandchild = f"600.{unique}"
        self.setup = f"601.{unique}"

    def body(self, hang: bool) -> str:
        return ESCAPING_BUILD.format(grandchild=self.grandchild, setup=self.setup, hang=hang)

    def pids(self, kind: str) -> set[int]:
        """Live processes running `sleep <token of kind>`."""
        token = getattr(self, kind).encode()
        found = set()
        for info in processes.all_processes():
            try:
                argv = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", token] and not info.dead:
                found.add(info.pid)
        return found


@pytest.fixture
def tokens():
    """Whatever the build's processes are, they are killed at the end, so that a
    failing test leaves nothing running."""
    made = Tokens()
    yield made
    processes.kill(made.pids("grandchild") | made.pids("setup"))


def wait_for_build_processes(farm: Farm, tokens: Tokens) -> tuple[int, int]:
    farm.wait(lambda: tokens.pids("grandchild") and tokens.pids("setup"), 120,
              "the build's processes to start")
    (grandchild,) = tokens.pids("grandchild")
    (setup,) = tokens.pids("setup")
    assert os.readlink(f"/proc/{grandchild}/cwd") == "/"
    assert open(f"/proc/{grandchild}/environ", "rb").read() == b""
    return setup, grandchild


def areas(work: Path) -> list[Path]:
    return sorted(work.glob(AREA_PREFIX + "*"))


def test_an_escaped_grandchild_dies_when_its_build_ends(farm, db, release, tokens):
    release("escaper", setup_body=tokens.body(hang=False))
    farm.start_master()
    slave = farm.start_slave("ender", pyenv_python("11"))
    seen: set[int] = set()

    def recorded():
        seen.update(tokens.pids("grandchild"))
        return builds_of(db, "escaper")

    farm.wait(recorded, 120, "the build to be recorded")
    (build,) = builds_of(db, "escaper")
    assert build.status == "success"
    # pip runs setup.py more than once: each run left a grandchild
    assert seen and all(gone(pid) for pid in seen)  # before BUILT
    assert "builds are contained: bwrap" in slave.log()


def test_builds_die_with_a_stopped_slave_and_its_area_goes(farm, db, release, tokens):
    release("stopped", setup_body=tokens.body(hang=True))
    farm.start_master()
    slave = farm.start_slave("stopper", pyenv_python("11"))
    setup, grandchild = wait_for_build_processes(farm, tokens)
    work = farm.work_root / "work-stopper"
    assert len(areas(work)) == 1
    assert slave.stop() == 0
    assert gone(setup) and gone(grandchild)
    assert areas(work) == []


@pytest.mark.parametrize("contained", [True, False], ids=["contained", "uncontained"])
def test_a_restarted_slave_kills_what_a_sigkilled_one_left(farm, db, release, tokens,
                                                          contained):
    release("orphaned", setup_body=tokens.body(hang=True))
    # (an operator who lets a slave without bubblewrap build says so)
    farm.start_master(*(() if contained else ("--containment", "optional")))
    extra = () if contained else UNCONTAINED
    first = farm.start_slave("phoenix", pyenv_python("11"), *extra)
    setup, grandchild = wait_for_build_processes(farm, tokens)
    work = farm.work_root / "work-phoenix"
    (old_area,) = areas(work)
    time.sleep(1)  # the slave records its build's processes every 0.2 s
    first.kill()
    if contained:
        # the sandbox dies with the slave, and everything in it
        wait_for(lambda: gone(setup) and gone(grandchild), 5, "the sandbox to die")
    else:
        assert "builds run UNCONTAINED" in first.log()
        time.sleep(0.5)
        # SIGKILL cleans nothing: the build's processes are still there
        assert not gone(setup) and not gone(grandchild)
    assert old_area.is_dir() and any(old_area.glob("piw-build-*"))
    second = farm.start_slave("phoenix", pyenv_python("11"), *extra)
    second.wait_log("removed 1 work area(s) of earlier runs", 60)
    wait_for(lambda: gone(setup) and gone(grandchild), 5, "the leftovers to be killed")
    assert not old_area.exists()
    assert old_area not in areas(work)


def test_two_slaves_sharing_a_dir_leave_each_others_builds_alone(farm, db, release, tokens):
    release("shared", setup_body=tokens.body(hang=True))
    farm.start_master()
    farm.start_slave("first", pyenv_python("11"))
    setup, grandchild = wait_for_build_processes(farm, tokens)
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
