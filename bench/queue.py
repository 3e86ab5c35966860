"""Benchmark: the build queue at the upstream index's scale.

Seeds a throw-away database with a million releases (most of them already
built, as on a farm that has caught up) and two ABIs, then measures:

- how long computing the next builds for each ABI takes (goal: under 1 s);
- how long a new release takes from being recorded to reaching the slave
  driver in a QUEUE message, through a real build_queue task (goal: under 5 s);
- how long a farm-wide build policy change takes to weigh every release again
  (newest:1, then back to all), and the queue query under the narrower policy.

    python bench/queue.py --versions 1000000
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
import zmq

from benchdb import DEFAULT_SERVER, throwaway_database

from piwheels.build_policy import parse_policy
from piwheels.db import Database
from piwheels.master.build_queue import BuildQueue
from piwheels.master.task import TaskControl
from piwheels.protocols import BUILD_QUEUE, QUEUE_REQUESTS, SUPERVISOR
from piwheels.transport import Socket

BIN = Path(sys.executable).parent


def seed(dsn: str, versions: int, built_fraction: float) -> None:
    """A million releases over 250k projects; most built on both ABIs."""
    projects = max(1, versions // 4)
    built = int(versions * built_fraction)
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        # seeding writes the derived "built" flag itself, so the triggers can rest
        conn.exec_driver_sql("SET session_replication_role = replica")
        conn.exec_driver_sql("INSERT INTO build_targets (abi_tag, platform_tag) VALUES ('cp311', 'linux_aarch64'), ('cp312', 'linux_aarch64')")
        conn.exec_driver_sql(
            "INSERT INTO packages (package) "
            f"SELECT 'pkg-' || n FROM generate_series(1, {projects}) AS n")
        conn.exec_driver_sql(
            "INSERT INTO versions (package, version, released, has_sdist, built) "
            f"SELECT 'pkg-' || (n %% {projects} + 1), (n / {projects})::text || '.0', "
            "       now() - (n * interval '1 minute'), true, "
            f"      n > {versions - built} "
            f"FROM generate_series(1, {versions}) AS n")
        # a failure counts once retried on another builder: two attempts settle a release
        for abi in ("cp311", "cp312"):
            for builder in ("seed-a", "seed-b"):
                conn.exec_driver_sql(
                    "INSERT INTO builds (package, version, abi_tag, platform_tag, slave_label, "
                    "                    builder, started, duration, status) "
                    f"SELECT package, version, '{abi}', 'linux_aarch64', '{builder}', '{builder}', now(), "
                    "       interval '1 minute', 'failed' "
                    "FROM versions WHERE built")
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def time_queries(db: Database, repeats: int) -> None:
    for abi in ("cp311", "cp312"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jobs = db.pending_builds((abi, "linux_aarch64"), 1000)
            times.append(time.perf_counter() - start)
        print(f"next 1000 builds for {abi}: median {statistics.median(times) * 1000:.1f} ms, "
              f"worst {max(times) * 1000:.1f} ms ({len(jobs)} found)")


def time_policy_change(db: Database, repeats: int) -> None:
    for spec in ("newest:1", "all"):
        start = time.perf_counter()
        changed = db.set_farm_policy(parse_policy(spec))
        print(f"farm policy set to {spec}: {len(changed)} projects' verdicts changed in "
              f"{time.perf_counter() - start:.1f} s")
        if spec != "all":
            time_queries(db, repeats)


def time_new_release(dsn: str, repeats: int) -> None:
    ctx = zmq.Context()
    supervisor = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
    supervisor.bind(SUPERVISOR.address)
    queue_in = Socket.make(ctx, zmq.PULL, BUILD_QUEUE.reverse())
    queue_in.bind(BUILD_QUEUE.address)
    task = BuildQueue(ctx, dsn=dsn, queue_size=1000, interval_s=3600)
    control = TaskControl(ctx, task.name)
    refresh = Socket.make(ctx, zmq.PUSH, QUEUE_REQUESTS)
    refresh.connect(QUEUE_REQUESTS.address)
    db = Database(dsn)
    task.start()
    try:
        while queue_in.zsocket.poll(2000):  # the first full refresh
            queue_in.recv()
        delays = []
        for _ in range(repeats):
            name = f"fresh-{uuid.uuid4().hex[:8]}"
            db.add_package(name)
            start = time.perf_counter()
            db.add_version(name, "1.0", released=datetime.now(timezone.utc), has_sdist=True)
            refresh.send("REFRESH", {"package": name})
            seen = set()
            while seen != {"cp311", "cp312"}:
                assert queue_in.zsocket.poll(10_000), "no QUEUE within 10 s"
                _, queue = queue_in.recv()
                if any(job["package"] == name for job in queue["builds"]):
                    seen.add(queue["abi_tag"])
            delays.append(time.perf_counter() - start)
        print(f"new release to QUEUE on both ABIs: median {statistics.median(delays) * 1000:.0f} "
              f"ms, worst {max(delays) * 1000:.0f} ms over {repeats} releases")
        # a farm-wide policy change as piw-control makes it: the setting, then POLICY
        start = time.perf_counter()
        db.set_farm_policy(parse_policy("newest:2"), weigh=False)
        refresh.send("POLICY", {"package": None})
        seen = set()
        while seen != {"cp311", "cp312"}:
            assert queue_in.zsocket.poll(300_000), "no REPLACE within 300 s"
            name, queue = queue_in.recv()
            if name == "REPLACE":
                seen.add(queue["abi_tag"])
        print(f"farm policy change to REPLACE on both ABIs (the build queue weighing every "
              f"release): {time.perf_counter() - start:.1f} s")
    finally:
        control.send("QUIT")
        task.join(10)
        for sock in (control, refresh, queue_in, supervisor):
            sock.close()
        db.close()
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--built", type=float, default=0.95, help="fraction already built")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    with throwaway_database(args.server) as (dsn, master_dsn):
        start = time.perf_counter()
        seed(dsn, args.versions, args.built)
        print(f"seeded {args.versions} releases ({args.built:.0%} built) and 2 ABIs in "
              f"{time.perf_counter() - start:.0f} s")
        with Database(master_dsn) as db:
            time_queries(db, args.repeats)
            time_policy_change(db, args.repeats)
        time_new_release(master_dsn, args.repeats)


if __name__ == "__main__":
    main()
