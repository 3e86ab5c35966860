"""Benchmark: what the farm adds to a build, against plain ``pip wheel``.

Real-world-shaped sdists (setup.py only, flit-core, hatchling, a C extension,
a Cython module with Cython as a build requirement; tests/backend_sdists.py)
are built, alternating in one run, two ways:

* plain: ``pip wheel`` of the release from the local index, with the build
  interpreter the slave uses and the options its build phase passes, its pip
  cache warm;
* farm: the same release through a one-slave farm (a real piw-master and a
  real piw-slave building contained as it does by default, the local index as
  the upstream), timed from the job being queued (the slave driver's page that
  names it, read from the master's log) to the wheel recorded and its pages
  written (the pages' modification times).

A first round warms both caches and is not counted.  Prints, per build, the
farm time over the plain time and where the farm's time went (waiting for a
slave, the build as the slave timed it, and everything after: BUILT, the
transfer, verification, the record and the pages), then the overall ratio
(total farm time over total plain time; the goal is 1.10 at most with
the smoke test the slave runs by default, 1.05 with ``--no-smoke-test``).

    python bench/overhead.py --rounds 2

Needs what the end-to-end tests need: PostgreSQL, bubblewrap, pyenv's
CPython 3.11 and the backend wheels the tests keep in their cache (run the
tests once; nothing is fetched from the network).  As root, the slave and
the plain builds run as the build user (piwbuild), as in the tests.
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path
sys.path.append(sys.path.pop(0))

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from backend_sdists import KIND_BY_NAME, Kind, make_kind_sdist
from benchdb import DEFAULT_SERVER, throwaway_database
from fake_index import TEST_CACHE, FakeIndex, download_backend_wheels
from farm import Farm, build_user, pyenv_python, wait_for

from piwheels.db import Database

#: The kinds built, in order.
KINDS = ("setup-py-only", "flit-core", "hatchling", "c-extension", "cython")
#: The build interpreter of the slave and of the plain builds.
PYTHON_MINOR = "11"
ABI = f"cp3{PYTHON_MINOR}"
#: How often the farm's pages and logs are looked at.
POLL_S = 0.01


def log_time(line: str) -> float:
    """The epoch time of a daemon's log line (piwheels.cli.LOG_FORMAT, local time)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_line(path: Path, offset: int, text: str) -> Optional[str]:
    """The first line of the log at *path* after byte *offset* containing *text*."""
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            if text in line:
                return line
    return None


class Plain:
    """``pip wheel`` of a release from the index, as the slave's build phase runs it."""

    def __init__(self, root: Path, python: str, index_url: str) -> None:
        self.python = python
        self.index_url = index_url
        self.home = root / "plain-home"
        self.home.mkdir()
        self.user = build_user()
        if self.user is not None:
            os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.home),
                    "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull,
                    "PIP_CACHE_DIR": str(self.home / "cache"), "PIP_NO_INPUT": "1",
                    "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}

    def build(self, name: str, version: str) -> float:
        out = Path(tempfile.mkdtemp(dir=self.home))
        if self.user is not None:
            os.chown(out, self.user.pw_uid, self.user.pw_gid)
        argv = [self.python, "-m", "pip", "wheel", f"{name}=={version}", "--no-deps",
                "--no-binary", name, "--index-url", self.index_url, "--wheel-dir", str(out),
                "--progress-bar", "off", "--disable-pip-version-check", "--no-input",
                "--verbose"]
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, cwd=out, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, **kwargs)
        elapsed = time.perf_counter() - started
        wheels = list(out.glob("*.whl"))
        shutil.rmtree(out, ignore_errors=True)
        if done.returncode != 0 or not wheels:
            raise SystemExit(f"plain pip wheel of {name} {version} failed:\n"
                             f"{(done.stdout + done.stderr)[-3000:]}")
        return elapsed


class FarmRun:
    """One master and one slave; builds one release at a time."""

    def __init__(self, root: Path, master_dsn: str, index_url: str, python: str,
                 smoke_test: bool = True) -> None:
        (root / "farm").mkdir()
        self.farm = Farm(root / "farm", master_dsn, index_url)
        self.db = Database(master_dsn)
        self.farm.start_master("-v")  # twice: the slave driver's pages are logged
        self.slave = self.farm.start_slave(
            "bench", python, *(() if smoke_test else ("--no-smoke-test",)))
        self.farm.wait(lambda: [s["state"] for s in self.farm.snapshot()["slaves"]] == ["parked"],
                       60, "the slave to connect and wait for work")

    def build(self, kind: Kind, version: str) -> dict[str, float]:
        """Seconds from queued to pages written, and where they went."""
        master_log, slave_log = self.farm.master.log_path, self.slave.log_path
        offsets = master_log.stat().st_size, slave_log.stat().st_size
        self.db.add_package(kind.name)
        self.db.add_version(kind.name, version, released=datetime.now(timezone.utc))
        queued = wait_for(lambda: first_line(master_log, offsets[0],
                                             f"QUEUE: 1 of 1 builds for {ABI}"),
                          60, f"{kind.name} {version} queued", POLL_S)
        prefix = f"{kind.module}-{version}-"
        pages = [self.farm.output / where / kind.name / "index.html"
                 for where in ("simple", "project")]
        wait_for(lambda: all(p.is_file() and prefix in p.read_text() for p in pages), 600,
                 f"the pages of {kind.name} {version}", POLL_S)
        written = max(p.stat().st_mtime for p in pages)
        (build,) = [b for v in self.db.get_project(kind.name).versions
                    if v.version == version for b in v.builds]
        if build.status != "success":
            raise SystemExit(f"the farm failed {kind.name} {version}: {build.status}")
        started = log_time(first_line(slave_log, offsets[1], f"building {kind.name} {version}"))
        duration = build.duration.total_seconds()
        total = written - log_time(queued)
        return {"farm": total, "wait": started - log_time(queued), "build": duration,
                "after": total - (started - log_time(queued)) - duration}

    def close(self) -> None:
        self.db.close()
        self.farm.stop()


def run(args: argparse.Namespace) -> None:
    python = args.python or pyenv_python(PYTHON_MINOR)
    root = Path(tempfile.mkdtemp(prefix="piw-bench-overhead-"))
    root.chmod(0o755)
    index = FakeIndex(root / "index").start()
    farm: Optional[FarmRun] = None
    try:
        for wheel in download_backend_wheels(TEST_CACHE / "build-backends"):
            index.add(wheel)
        sdists = root / "sdists"
        sdists.mkdir()
        with throwaway_database(args.server) as (_, master_dsn):
            plain = Plain(root, python, index.url)
            farm = FarmRun(root, master_dsn, index.url, python, not args.no_smoke_test)
            print(f"python {python}; slave builds contained by "
                  f"{farm.farm.snapshot()['slaves'][0]['containment']}; wheels "
                  f"{'not ' if args.no_smoke_test else ''}smoke-tested")
            print(f"{'build':28} {'plain s':>8} {'farm s':>8} {'ratio':>6}   farm: "
                  f"{'wait':>6} {'build':>6} {'after':>6}")
            totals = {"plain": 0.0, "farm": 0.0, "wait": 0.0, "build": 0.0, "after": 0.0}
            for round_number in range(args.rounds + 1):
                for number, name in enumerate(KINDS):
                    kind = KIND_BY_NAME[name]
                    version = f"1.{round_number}"
                    index.add(make_kind_sdist(sdists, kind, version))
                    farm_first = (round_number + number) % 2 == 1  # A B, B A, ...
                    times: dict[str, float] = {}
                    for way in (("farm", "plain") if farm_first else ("plain", "farm")):
                        if way == "plain":
                            times["plain"] = plain.build(kind.name, version)
                        else:
                            times.update(farm.build(kind, version))
                    label = f"{name} {version}" + ("" if round_number else " (warm-up)")
                    print(f"{label:28} {times['plain']:8.2f} {times['farm']:8.2f} "
                          f"{times['farm'] / times['plain']:6.2f}   farm: {times['wait']:6.3f} "
                          f"{times['build']:6.2f} {times['after']:6.3f}", flush=True)
                    if round_number:
                        for key in totals:
                            totals[key] += times[key]
            farm.close()
            farm = None
        print(f"\noverall: farm {totals['farm']:.2f} s / plain {totals['plain']:.2f} s = "
              f"{totals['farm'] / totals['plain']:.3f} "
              f"(goal <= {'1.05' if args.no_smoke_test else '1.10'})")
        extra = totals["farm"] - totals["plain"]
        print(f"the farm's extra {extra:+.2f} s: waiting for the slave {totals['wait']:.2f} s, "
              f"the build (as the slave timed it) {totals['build'] - totals['plain']:+.2f} s "
              f"against plain, after the build {totals['after']:.2f} s")
    finally:
        if farm is not None:
            farm.close()
        index.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-smoke-test", action="store_true",
                        help="the slave skips its smoke test (the goal is then 1.05, not 1.10)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="counted rounds of every kind (default 2)")
    parser.add_argument("--python", help=f"the build interpreter (default pyenv's 3.{PYTHON_MINOR})")
    parser.add_argument("--server", default=DEFAULT_SERVER,
                        help="a PostgreSQL server where this may create a database")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
