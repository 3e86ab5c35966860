"""Benchmark: how fast the master hands out and records builds.

Starts a real piw-master on a throw-away database seeded with many releases,
then drives it with N simulated slaves (in a few client processes) that do
zero-work builds: each BUILD is answered at once with a failed BUILT, which
still goes through the whole record path (database row, log, page update
request).  Prints builds completed per second and the longest pause between
two BUILD replies seen by any slave.

It also measures whether the pages keep pace (issue 16): for every build
recorded during the run, the time from its record to its pages on disk, and
the page backlog.  How, from outside the master, with bounds that can only
make the figures worse than the truth:

- *recorded at*: a watcher polls the database every ``--watch-interval``
  seconds for builds with a higher id than it has seen (only the build
  recorder inserts builds, so ids appear in commit order).  A build first seen
  by one poll was committed after the previous poll began and after it ended
  (``started + duration``): the later of the two is its record time, a lower
  bound of the commit.
- *pages on disk*: the watcher then reads the pages of every project with a
  build not yet on disk (re-reading a file only when its inode or mtime
  changed) and takes a build as done when all of them show it: its project
  page's JSON lists the attempt, its HTML links the attempt's log, the log is
  on disk, and for a successful build the simple page's JSON and HTML list its
  files.  (A zero-work build fails, and a project without a wheel has no
  simple page at all, by design: a 404.)  Its done time is the moment the check
  that saw it began, an upper bound.
- *backlog*: the projects with a recorded build not yet on disk, sampled at
  every poll (the maximum and the figure at the end), beside the index
  writer's own count of queued projects read from the master's status feed.
  At the end the watcher goes on for ``--drain`` seconds, so a build recorded
  in the last moment is still timed (one not on disk by then counts as late,
  with the time it waited).

Builds are then summarised as the 99th percentile and the maximum of the
record-to-pages time (goal: both under 5 s at 1,000 builds/s for 120 s).

    python bench/dispatch.py --slaves 200 --seconds 120
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
import zmq

from benchdb import DEFAULT_SERVER, throwaway_database

from piwheels.config import OPTIONS
from piwheels.control_client import StatusFeed
from piwheels.protocols import PROTOCOL_VERSION, SLAVE
from piwheels.storage import LOGS_DIR, OutputTree, log_path
from piwheels.tags import Target
from piwheels.transport import Socket

BIN = Path(sys.executable).parent
#: The one target the zero-work slaves build for.
TARGET = Target("cp311", "linux_armv7l")
QUEUE_SIZE = OPTIONS["queue_size"].default
IDLE = {"stats": {"load_1m": 0.5, "memory_free": 10**9, "disk_free": 10**10,
                  "temperature_c": None}}


def seed(dsn: str, versions: int) -> None:
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO packages (package) "
            f"SELECT 'pkg-' || n FROM generate_series(1, {versions}) AS n")
        conn.exec_driver_sql(
            "INSERT INTO versions (package, version, released, has_sdist) "
            "SELECT 'pkg-' || n, '1.0', now() - n * interval '1 second', true "
            f"FROM generate_series(1, {versions}) AS n")
        conn.exec_driver_sql("INSERT INTO build_targets (abi_tag, platform_tag) "
                             f"VALUES ('{TARGET.abi_tag}', '{TARGET.platform_tag}')")
    engine.dispose()


@dataclass
class Pending:
    """A recorded build whose pages are not all on disk yet."""

    build_id: int
    recorded: float  # a lower bound of its commit (see the module's docstring)
    files: tuple[str, ...]  # a successful build's files


@dataclass
class Seen:
    """One page file as the watcher last read it (re-read only when it changes)."""

    key: tuple = ()
    text: str = ""


@dataclass
class PageWatch:
    """Times every recorded build from its record to its pages on disk (a thread)."""

    dsn: str
    output: Path
    status_address: str
    interval_s: float
    pending: dict[str, list[Pending]] = field(default_factory=dict)
    seen: dict[Path, Seen] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    #: (seconds into the run, projects waiting for pages, the writer's queued projects)
    samples: list[tuple[float, int, Optional[int]]] = field(default_factory=list)
    writer_dirty: Optional[int] = None
    last_id: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.tree = OutputTree(self.output)
        self.began = time.time()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        engine = sa.create_engine(self.dsn)
        feed = StatusFeed(self.status_address, ctx=zmq.Context())
        previous = time.time()
        try:
            with engine.connect() as conn:
                while not self.stop.is_set():
                    polled = time.time()
                    rows = conn.execute(sa.text(
                        "SELECT b.build_id, b.package, "
                        "       extract(epoch FROM b.started + b.duration) AS ended, "
                        "       array_remove(array_agg(f.filename), NULL) AS files "
                        "FROM builds b LEFT JOIN files f USING (build_id) "
                        "WHERE b.build_id > :last GROUP BY b.build_id ORDER BY b.build_id"),
                        {"last": self.last_id}).all()
                    conn.commit()
                    for build_id, package, ended, files in rows:
                        self.pending.setdefault(package, []).append(Pending(
                            build_id, max(previous, float(ended)),
                            tuple(files) if files else ()))
                        self.last_id = build_id
                    previous = polled
                    self.check()
                    while (msg := feed.poll(0)) is not None:
                        if msg[0] == "MASTER":
                            self.writer_dirty = msg[1]["master"].get(
                                "index_writer", {}).get("dirty")
                    self.samples.append((time.time() - self.began, len(self.pending),
                                         self.writer_dirty))
                    self.stop.wait(max(0.0, self.interval_s - (time.time() - polled)))
        finally:
            feed.close()
            engine.dispose()

    def read(self, path: Path) -> str:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return ""
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        seen = self.seen.get(path)
        if seen is None or seen.key != key:
            try:
                seen = self.seen[path] = Seen(key, path.read_text())
            except FileNotFoundError:
                return ""
        return seen.text

    def check(self) -> None:
        """Take off the builds whose pages are all on disk now."""
        now = time.time()
        for package in list(self.pending):
            project_dir = self.tree.project_dir(package)
            project_json = self.read(self.tree.project_json(package))
            project_html = self.read(project_dir / "index.html")
            simple_dir = self.tree.simple_dir(package)
            waiting = []
            for build in self.pending[package]:
                log = self.tree.build_log(build.build_id)
                done = (f'"build_id":{build.build_id},' in project_json
                        and log_link(build.build_id) in project_html and log.exists())
                if done and build.files:
                    simple_json = self.read(simple_dir / "index.json")
                    simple_html = self.read(simple_dir / "index.html")
                    done = all(f'"filename":"{name}"' in simple_json and name in simple_html
                               for name in build.files)
                if done:
                    self.delays.append(now - build.recorded)
                else:
                    waiting.append(build)
            if waiting:
                self.pending[package] = waiting
            else:
                del self.pending[package]
                for path in (self.tree.project_json(package), project_dir / "index.html",
                             simple_dir / "index.json", simple_dir / "index.html"):
                    self.seen.pop(path, None)

    def finish(self) -> list[float]:
        """Stop watching; every build's delay, a late one's counted to now."""
        self.stop.set()
        self.thread.join(60)
        now = time.time()
        late = [now - build.recorded for builds in self.pending.values() for build in builds]
        return self.delays + late


def log_link(build_id: int) -> str:
    """How a project page links an attempt's log."""
    return f"{LOGS_DIR}/{log_path(build_id)}"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (0.99: the value 99 % of *values* do not exceed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def client(port: int, slaves: int, seconds: float, results, rate: float = 0) -> None:
    """Run *slaves* simulated slaves for *seconds*; report counts and the longest gap
    (*rate*: answer at most this many builds per second, 0: as fast as they come)."""
    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = {}
    for n in range(slaves):
        sock = Socket.make(ctx, zmq.DEALER, SLAVE)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": f"bench-{os.getpid()}-{n}",
            "python_tag": TARGET.abi_tag, "abi_tag": TARGET.abi_tag,
            "platform_tag": TARGET.platform_tag,
            "python_version": "3.11.2", "pip_version": "23.0", "os": "bench", "image": "e" * 64,
            "build_timeout_s": 3600, "building": None,
            # zero-work builds run nothing, so contain nothing (the master is
            # told --containment optional)
            "containment": "none: zero-work benchmark slave", "platforms": [TARGET.platform_tag],
        })
        socks[sock.zsocket] = sock
        poller.register(sock.zsocket, zmq.POLLIN)
    done = 0
    builds_out = 0
    last_build = None
    longest_gap = 0.0
    gap_at = 0.0
    start = None
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        for zsocket, _ in poller.poll(100):
            sock = socks[zsocket]
            name, payload = sock.recv()
            if name == "ACK":
                sock.send("IDLE", IDLE)
                if start is None:
                    start = time.monotonic()
                    deadline = start + seconds
            elif name == "BUILD":
                if rate:
                    wait = start + builds_out / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                now = time.monotonic()
                if last_build is not None and now - last_build > longest_gap:
                    longest_gap, gap_at = now - last_build, now - start
                last_build = now
                builds_out += 1
                sock.send("BUILT", {
                    "package": payload["package"], "version": payload["version"],
                    "success": False, "duration_s": 0.0,
                    "log": "zero-work build\n", "reason": "benchmark", "files": [],
                })
            elif name == "DONE":
                done += 1
                sock.send("IDLE", IDLE)
            elif name == "SLEEP":
                time.sleep(0)  # nothing queued yet: ask again
                sock.send("IDLE", IDLE)
            elif name in ("DIE", "RESET"):
                raise SystemExit(f"master said {name}: {payload}")
    results.put((done, builds_out, longest_gap, time.monotonic() - start, gap_at))
    for sock in socks.values():
        sock.close()
    ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--slaves", type=int, default=200)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--versions", type=int, default=200_000)
    parser.add_argument("--master-log", help="keep the master's debug log in this file")
    parser.add_argument("--rate", type=float, default=0,
                        help="builds per second all slaves together answer at most "
                             "(0: as fast as the master hands them out)")
    parser.add_argument("--watch-interval", type=float, default=0.1,
                        help="seconds between the page watcher's looks")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds the page watcher goes on after the slaves stop")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with throwaway_database(args.server) as (dsn, master_dsn), \
            tempfile.TemporaryDirectory() as output:
        seed(dsn, args.versions)
        port, file_port = free_port(), free_port()
        master = subprocess.Popen([
            str(BIN / "piw-master"), "-q", "--dsn", master_dsn, "--output-path", output,
            "--pypi-simple", "http://127.0.0.1:1/simple/",
            "--slave-bind", f"tcp://127.0.0.1:{port}", "--file-bind", f"tcp://127.0.0.1:{file_port}",
            "--containment", "optional",
            "--sleep-interval", "0.05",
            "--control-address", f"ipc://{output}/.control",
            "--status-address", f"ipc://{output}/.status",
            *(["--log-file", args.master_log] if args.master_log else []),
        ])
        watch = PageWatch(dsn, Path(output), f"ipc://{output}/.status", args.watch_interval)
        try:
            time.sleep(2)
            watch.start()
            results = multiprocessing.Queue()
            per_client = args.slaves // args.clients
            clients = [
                multiprocessing.Process(target=client,
                                        args=(port, per_client, args.seconds, results,
                                              args.rate / args.clients))
                for _ in range(args.clients)
            ]
            for proc in clients:
                proc.start()
            figures = [results.get(timeout=args.seconds + 60) for _ in clients]
            for proc in clients:
                proc.join()
            slaves_done = time.time() - watch.began
            time.sleep(args.drain)  # the recorder's last batch, and its pages
            delays = watch.finish()
        finally:
            watch.stop.set()
            master.terminate()
            master.wait(60)
        engine = sa.create_engine(dsn)
        with engine.connect() as conn:
            recorded = conn.exec_driver_sql("SELECT count(*) FROM builds").scalar()
            logs = conn.exec_driver_sql("SELECT count(*) FROM build_logs").scalar()
        engine.dispose()
        head_s, page_s = time_queue(dsn)
    done = sum(f[0] for f in figures)
    elapsed = max(f[3] for f in figures)
    gap, gap_at = max((f[2], f[4]) for f in figures)
    print(f"slaves: {per_client * args.clients}, seconds: {elapsed:.1f}, load average "
          f"before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)")
    print(f"builds completed: {done} ({done / elapsed:.0f}/s)")
    print(f"builds recorded in the database: {recorded} (logs: {logs})")
    print(f"longest pause between BUILD replies: {gap * 1000:.0f} ms "
          f"(at {gap_at:.1f} s into the run)")
    print_pages(watch, delays, slaves_done)
    print(f"afterwards, the queue's first {QUEUE_SIZE} builds took {head_s * 1000:.0f} ms "
          f"to compute, and the next {QUEUE_SIZE} {page_s * 1000:.0f} ms")


def print_pages(watch: PageWatch, delays: list[float], slaves_done: float) -> None:
    """The record-to-pages figures and the backlog over time."""
    late = sum(len(builds) for builds in watch.pending.values())
    if delays:
        print(f"record to pages on disk, {len(delays)} builds: p99 "
              f"{percentile(delays, 0.99):.2f} s, max {max(delays):.2f} s, "
              f"median {percentile(delays, 0.5):.2f} s; over 5 s: "
              f"{sum(1 for d in delays if d > 5)}; not on disk "
              f"{watch.samples[-1][0] - slaves_done:.0f} s after the slaves stopped: {late}")
    during = [s for s in watch.samples if s[0] <= slaves_done] or watch.samples
    if not during:
        return
    step = max(1, len(during) // 12)
    print("page backlog (projects waiting for pages / the writer's queued projects), "
          "sampled:")
    print("  " + ", ".join(f"{t:.0f}s: {w}/{'-' if d is None else d}"
                           for t, w, d in during[::step]))
    dirty = [d for _, _, d in during if d is not None]
    print(f"  max {max(w for _, w, _ in during)} (writer: {max(dirty) if dirty else '-'}); "
          f"when the slaves stopped {during[-1][1]} (writer: "
          f"{'-' if during[-1][2] is None else during[-1][2]}); "
          f"at the end {watch.samples[-1][1]}")


def time_queue(dsn: str) -> tuple[float, float]:
    """How long the build queue's queries take on the database the run left:
    a recalculation from the head, and the page after it."""
    from piwheels.db import Database
    with Database(dsn) as db:
        start = time.perf_counter()
        _, cursor = db.pending_page(TARGET, QUEUE_SIZE)
        head = time.perf_counter()
        db.pending_page(TARGET, QUEUE_SIZE, after=cursor)
        return head - start, time.perf_counter() - head


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
