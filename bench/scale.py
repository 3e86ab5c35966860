"""Benchmark: a catalogue the size of the upstream index (issue 16, point 3).

Seeds a throw-away database (bench/scale_seed.py: 700k projects, 5M releases,
3 targets and a build history by default) and reports, each with its goal:

- the queue's next 1,000 jobs per target, from the head and the page after;
- a new release reaching the slave driver in a QUEUE message, through the real
  pypi_follower and build_queue tasks and the fake upstream (tests/fake_pypi.py);
- the follower applying 100k change-log events;
- one project's pages after a build is recorded;
- a real master (every task) rewriting every page while zero-work slaves
  build, with dispatch measured during the rewrite (builds handed out per
  second, the longest pause between two BUILDs);
- the database's size on disk and the master's RSS.

    python bench/scale.py                         # the full size (GBs; check df)
    python bench/scale.py --projects 50000 --releases 300000
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its helpers are still found)
sys.path.append(sys.path.pop(0))

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import sqlalchemy as sa
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchdb import DEFAULT_SERVER, throwaway_database
from fake_pypi import Dist, FakePyPI, Project
from scale_seed import TARGETS, Target, release_of, seed, table_counts

from piwheels.allow_list import AllowList
from piwheels.db import Database
from piwheels.index_pages import Site
from piwheels.master.build_queue import BuildQueue
from piwheels.master.index_writer import PageWriter
from piwheels.master.pypi_follower import PyPIFollower
from piwheels.master.task import TaskControl
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, SUPERVISOR, WheelFacts
from piwheels.pypi_client import PyPIClient
from piwheels.records import BuildRecord
from piwheels.transport import Socket

QUEUE_SIZE = 1000
SITE = Site(name="Scale farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")


@dataclass
class Figure:
    """One measured figure beside its goal (*ok*: None when the figure has no goal)."""

    what: str
    value: float
    unit: str
    goal: str = ""
    ok: Optional[bool] = None

    def line(self) -> str:
        verdict = "" if self.ok is None else ("PASS" if self.ok else "MISS")
        goal = f"  (goal {self.goal})" if self.goal else ""
        return f"{verdict:4}  {self.what}: {self.value:,.1f} {self.unit}{goal}"


def below(what: str, value: float, unit: str, limit: float) -> Figure:
    return Figure(what, value, unit, f"< {limit:g} {unit}", value < limit)


# --- the queue ------------------------------------------------------------------------

def queue_figures(dsn: str, targets: Sequence[Target], repeats: int) -> list[Figure]:
    """The next 1,000 jobs per target: from the head (a recalculation), and the page after."""
    figures = []
    with Database(dsn) as db:
        for target in targets:
            heads, nexts, found = [], [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                jobs, cursor = db.pending_page(target, QUEUE_SIZE)
                heads.append(time.perf_counter() - start)
                start = time.perf_counter()
                db.pending_page(target, QUEUE_SIZE, after=cursor)
                nexts.append(time.perf_counter() - start)
                found = len(jobs)
            figures.append(below(f"queue head, next {QUEUE_SIZE} jobs for {target} "
                                 f"({found} found), worst of {repeats}",
                                 max(heads) * 1000, "ms", 100))
            figures.append(below(f"queue, the {QUEUE_SIZE} after those for {target}, "
                                 f"worst of {repeats}", max(nexts) * 1000, "ms", 100))
    return figures


# --- the follower and the build queue -------------------------------------------------

class Upstream:
    """The fake upstream, a real pypi_follower and a real build_queue; this bench
    plays the slave driver (BUILD_QUEUE) and the index writer (INDEX_REQUESTS)."""

    def __init__(self, dsn: str, page_size: int, projects: int, releases: int) -> None:
        self.projects, self.releases = projects, releases
        self.released: list[int] = []
        self.ctx = zmq.Context()
        self.pypi = FakePyPI(page_size=page_size).__enter__()
        self.sinks = []
        for protocol in (SUPERVISOR, INDEX_REQUESTS):
            sink = Socket.make(self.ctx, zmq.PULL, protocol.reverse())
            sink.bind(protocol.address)
            self.sinks.append(sink)
        self.queue_in = Socket.make(self.ctx, zmq.PULL, BUILD_QUEUE.reverse())
        self.queue_in.bind(BUILD_QUEUE.address)
        self.queue = BuildQueue(self.ctx, dsn=dsn, queue_size=QUEUE_SIZE, interval_s=3600)
        client = PyPIClient(simple_url=self.pypi.simple_url, json_url=self.pypi.json_url,
                            xmlrpc_url=self.pypi.xmlrpc_url)
        self.follower = PyPIFollower(self.ctx, dsn=dsn, client=client, allow=AllowList(),
                                     poll_interval_s=0.1, reconcile_interval_s=10**9)
        # the farm is in step with upstream: follow the feed, no reconciliation
        self.follower.next_reconcile_s = float("inf")
        self.tasks = [self.queue, self.follower]
        self.controls = [TaskControl(self.ctx, task.name) for task in self.tasks]
        self.db = Database(dsn)
        self.db.set_pypi_serial(0)

    def start(self) -> None:
        for task in self.tasks:
            task.start()
        while self.queue_in.zsocket.poll(5000):  # ABIS and the first full refresh
            self.queue_in.recv()

    def drain(self) -> None:
        for sink in self.sinks:
            while sink.zsocket.poll(0):
                sink.recv()

    def close(self) -> None:
        for control, task in zip(self.controls, self.tasks):
            control.send("QUIT")
            task.join(60)
        for sock in (*self.controls, *self.sinks, self.queue_in):
            sock.close()
        self.db.close()
        self.pypi.__exit__(None, None, None)
        self.ctx.destroy(linger=0)

    def serve(self, name: str, versions: dict[str, bool]) -> None:
        """Upstream knows *name* with these releases ({version: has an sdist}): what
        the follower reads when an event makes it read the project whole."""
        now = datetime.now(timezone.utc)
        releases = {version: [Dist(f"{name}-{version}.tar.gz", b"a synthetic sdist", now, None)]
                    if sdist else [] for version, sdist in versions.items()}
        with self.pypi.lock:
            self.pypi.projects[name] = Project(name=name, serial=self.pypi.serial,
                                               releases=releases)

    def serve_seeded(self, k: int, new_version: str) -> tuple[str, dict[str, bool]]:
        """Seeded project number *k* as upstream has it, plus *new_version*."""
        name = f"proj-{k}"
        versions = {f"{v}.0": (k + (v - 1) * self.projects) % 20 != 17
                    for v in range(1, (self.releases - k) // self.projects + 2)}
        versions[new_version] = True
        self.serve(name, versions)
        return name, versions

    def new_release(self, targets: Sequence[Target], k: int) -> tuple[float, float]:
        """A new release of seeded project *k* upstream: (seconds from upload to the
        QUEUE of every target naming it, seconds from its row in the database to that)."""
        version = f"{800 + len(self.released)}.0"
        self.released.append(k)
        uploaded = time.perf_counter()
        with self.pypi.lock:
            name, _ = self.serve_seeded(k, version)
            stamp = int(time.time())
            self.pypi.log_events([(name, version, stamp, "new release"),
                                  (name, version, stamp, f"add source file {name}-{version}.tar.gz")])
            self.pypi.projects[name].serial = self.pypi.serial
        recorded = None
        seen: set[str] = set()
        wanted = set(targets)
        while seen != wanted:
            if recorded is None and self.db.get_versions(name).get(version, {}).get("has_sdist"):
                recorded = time.perf_counter()
            if self.queue_in.zsocket.poll(2 if recorded is None else 100):
                _, queue = self.queue_in.recv()
                if any(job["package"] == name and job["version"] == version
                       for job in queue.get("builds", ())):
                    seen.add(Target(queue["abi_tag"], queue["platform_tag"]))
            self.drain()
            if time.perf_counter() - uploaded > 30:
                raise RuntimeError(f"no QUEUE naming {name} {version} within 30 s")
        done = time.perf_counter()
        return done - uploaded, done - (recorded or uploaded)

    def catch_up(self, events: int) -> float:
        """*events* change-log events at once: nine in ten a new release of a known
        project with its sdist (two events), the rest a new project's first
        (create, new release, add source file); upstream serves every project
        they name.  Seconds until the stored serial reaches them."""
        rows = []
        stamp = int(time.time())
        batch = uuid.uuid4().hex[:6]
        i = 0
        while len(rows) < events:
            if i % 10 == 9:
                name, version = f"catch-{batch}-{i}", "1.0"
                self.serve(name, {version: True})
                rows.append((name, None, stamp, "create"))
            else:
                version = f"{700 + i // self.projects}.0"
                name, _ = self.serve_seeded(i % self.projects + 1, version)
            rows += [(name, version, stamp, "new release"),
                     (name, version, stamp, f"add source file {name}-{version}.tar.gz")]
            i += 1
        rows = rows[:events]
        start = time.perf_counter()
        self.pypi.log_events(rows)
        while self.db.get_pypi_serial() < self.pypi.serial:
            time.sleep(0.05)
            self.drain()
            while self.queue_in.zsocket.poll(0):
                self.queue_in.recv()
            if time.perf_counter() - start > 1800:
                raise RuntimeError("the follower did not catch up within 30 minutes")
        return time.perf_counter() - start


def follower_figures(dsn: str, targets: Sequence[Target], repeats: int, events: int,
                     projects: int, releases: int) -> list[Figure]:
    upstream = Upstream(dsn, page_size=max(events, 1), projects=projects, releases=releases)
    try:
        upstream.start()
        delays = [upstream.new_release(targets, (i * 104729) % projects + 1)
                  for i in range(repeats)]
        elapsed = upstream.catch_up(events)
    finally:
        upstream.close()
    return [
        below(f"new release recorded -> QUEUE on every target (real follower and build "
              f"queue), worst of {repeats}", max(d[1] for d in delays), "s", 1),
        Figure(f"new release uploaded -> QUEUE (the follower's XML-RPC pace included), "
               f"median of {repeats}", statistics.median(d[0] for d in delays), "s"),
        Figure(f"follower applying {events} change-log events (one page)",
               events / elapsed, "events/s", ">= 20,000 events/s", events / elapsed >= 20_000),
    ]


# --- one project's pages -------------------------------------------------------------

def new_build(db: Database, package: str, version: str, target: Target) -> str:
    """A new release of *package* with one successful build; its wheel's name."""
    now = datetime.now(timezone.utc)
    db.add_version(package, version, released=now, has_sdist=True)
    stem = f"{package.replace('-', '_')}-{version}"
    filename = f"{stem}-{target.abi_tag}-{target.abi_tag}-{target.platform_tag}.whl"
    digest = os.urandom(32).hex()
    db.record_build(BuildRecord(
        package=package, version=version, abi_tag=target.abi_tag,
        platform_tag=target.platform_tag, slave_label="bench",
        started=now, duration=timedelta(seconds=42), status="success", log="a fresh build\n",
        files=(WheelFacts(
            filename=filename, size=12345, sha256=digest, package_tag=package.replace("-", "_"),
            version_tag=version, py_tag=target.abi_tag, abi_tag=target.abi_tag,
            platform_tag=target.platform_tag, requires_python=">=3.9", requires_dist=(),
            metadata=b"", metadata_sha256=digest, apt_dependencies=()),),
    ))
    return filename


def page_figures(dsn: str, output: Path, projects: int, targets: Sequence[Target],
                 repeats: int) -> list[Figure]:
    times = []
    with Database(dsn) as db:
        pages = PageWriter(db, output, SITE)
        pages.write_packages([release_of(1, projects)[0]])  # the templates load once
        for i in range(repeats):
            package, _ = release_of((i * 7919) % projects + 1, projects)
            filename = new_build(db, package, f"{900 + i}.0", targets[0])
            start = time.perf_counter()
            pages.write_packages([package])
            times.append(time.perf_counter() - start)
            if filename not in (output / "simple" / package / "index.html").read_text():
                raise RuntimeError(f"{package}'s page does not list {filename}")
        # the summary pages, written by the index writer's own worker process
        summaries = {}
        for page, write in (("failures", pages.write_failures), ("home", pages.write_home)):
            start = time.perf_counter()
            write()
            summaries[page] = time.perf_counter() - start
    return [below(f"one project's pages after a build, worst of {repeats}",
                  max(times) * 1000, "ms", 50),
            Figure(f"one project's pages after a build, median of {repeats}",
                   statistics.median(times) * 1000, "ms"),
            *(Figure(f"the {page} page, query and write", seconds, "s")
              for page, seconds in summaries.items())]


# --- sizes ---------------------------------------------------------------------------

def database_size(dsn: str) -> int:
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    finally:
        engine.dispose()


def master_figures(dsn: str, output: Path, work: Path, targets: Sequence[Target],
                   projects: int, slaves: int, rewrite_limit_s: float,
                   say: Callable[[str], None]) -> list[Figure]:
    from scale_master import run_master

    run = run_master(dsn, output, work, list(targets), slaves=slaves,
                     idle_s=20, rewrite_limit_s=rewrite_limit_s, say=say)
    for note in run.notes:
        say(f"  note: {note}")
    rewrite_what = (f"full rewrite of every page ({run.projects_asked} projects)"
                    if run.rewrite_done else
                    f"full rewrite of every page, NOT FINISHED within {rewrite_limit_s:.0f} s")
    figures = [
        Figure("master start (policy check, every task started)", run.start_s, "s"),
        Figure("dispatch before the rewrite: builds handed out", run.idle.rate, "builds/s"),
        Figure("dispatch before the rewrite: longest pause between BUILDs",
               run.idle.longest_pause_s * 1000, "ms"),
        Figure(rewrite_what, run.rewrite_s / 60, "min", "< 10 min",
               run.rewrite_done and run.rewrite_s < 600),
        Figure("dispatch during the rewrite: builds handed out", run.during.rate,
               "builds/s", "> 0 (dispatch goes on)", run.during.builds > 0),
        below("dispatch during the rewrite: longest pause between BUILDs",
              run.during.longest_pause_s * 1000, "ms", 1000),
        below("master RSS after start and 20 s of dispatch", run.rss_idle / 2**20, "MiB",
              1024),
        below("master RSS, peak (VmHWM) through the rewrite", run.rss_peak / 2**20, "MiB",
              1024),
        Figure("the rewrite's worker processes, largest RSS sum seen",
               run.workers_peak / 2**20, "MiB"),
    ]
    return figures


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--projects", type=int, default=700_000)
    parser.add_argument("--releases", type=int, default=5_000_000)
    parser.add_argument("--targets", default=",".join(f"{t.abi_tag}:{t.platform_tag}"
                                                      for t in TARGETS),
                        help="the targets to seed, comma-separated ABI:PLATFORM pairs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--slaves", type=int, default=100)
    parser.add_argument("--rewrite-limit", type=float, default=1500,
                        help="seconds the full rewrite may take before the bench stops it")
    parser.add_argument("--no-master", action="store_true",
                        help="leave out the master phase (full rewrite, dispatch, RSS)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the output tree goes (default: a temp dir)")
    args = parser.parse_args(argv)
    targets = [Target(*pair.split(":", 1)) for pair in args.targets.split(",")]

    print(f"load average {os.getloadavg()[0]:.2f}; free disk under the work dir: "
          f"{shutil.disk_usage(args.work_dir or tempfile.gettempdir()).free / 2**30:.0f} GiB")
    work = Path(tempfile.mkdtemp(prefix="piwheels-scale-", dir=args.work_dir))
    figures: list[Figure] = []
    try:
        with throwaway_database(args.server) as (dsn, master_dsn):
            start = time.perf_counter()
            seed(dsn, args.projects, args.releases, targets)
            seeded_s = time.perf_counter() - start
            counts = table_counts(dsn)
            print(f"seeded in {seeded_s:.0f} s: " + ", ".join(
                f"{count:,} {table}" for table, count in counts.items())
                + f", {len(targets)} targets ({', '.join(map(str, targets))})")
            figures.append(Figure("database size on disk after seeding",
                                  database_size(dsn) / 2**30, "GiB"))
            for step, measure in (
                ("queue", lambda: queue_figures(master_dsn, targets, args.repeats)),
                ("follower", lambda: follower_figures(master_dsn, targets, args.repeats,
                                                      args.events, args.projects,
                                                      args.releases)),
                ("pages", lambda: page_figures(master_dsn, work / "output", args.projects,
                                               targets, args.repeats)),
            ):
                print(f"measuring: {step}")
                found = measure()
                for figure in found:
                    print("  " + figure.line())
                figures += found
            if not args.no_master:
                print("measuring: a master rewriting every page while it dispatches")
                found = master_figures(master_dsn, work / "output", work, targets,
                                       args.projects, args.slaves, args.rewrite_limit, print)
                for figure in found:
                    print("  " + figure.line())
                figures += found
            figures.append(Figure("database size on disk at the end",
                                  database_size(dsn) / 2**30, "GiB"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsummary ({args.projects:,} projects, {args.releases:,} releases, "
          f"{len(targets)} targets; load average now {os.getloadavg()[0]:.2f}):")
    for figure in figures:
        print("  " + figure.line())
    return 0 if all(f.ok is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
