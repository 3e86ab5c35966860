"""Benchmark: how fast the master hands out and records builds.

Starts a real piw-master on a throw-away database seeded with many releases,
then drives it with N simulated slaves (in a few client processes) that do
zero-work builds: each BUILD is answered at once with a failed BUILT, which
still goes through the whole record path (database row, log, page update
request).  Prints builds completed per second and the longest pause between
two BUILD replies seen by any slave.

    python bench/dispatch.py --slaves 200 --seconds 120
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
import zmq

from benchdb import DEFAULT_SERVER, throwaway_database

from piwheels.config import OPTIONS
from piwheels.protocols import PROTOCOL_VERSION, SLAVE
from piwheels.transport import Socket

BIN = Path(sys.executable).parent
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
        conn.exec_driver_sql("INSERT INTO build_abis (abi_tag) VALUES ('cp311')")
    engine.dispose()


def client(port: int, slaves: int, seconds: float, results) -> None:
    """Run *slaves* simulated slaves for *seconds*; report counts and the longest gap."""
    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = {}
    for n in range(slaves):
        sock = Socket.make(ctx, zmq.DEALER, SLAVE)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": f"bench-{os.getpid()}-{n}",
            "python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_armv7l",
            "python_version": "3.11.2", "pip_version": "23.0", "os": "bench", "image": "e" * 64,
            "build_timeout_s": 3600, "building": None,
            # zero-work builds run nothing, so contain nothing (the master is
            # told --containment optional)
            "containment": "none: zero-work benchmark slave", "platforms": ["linux_armv7l"],
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
    args = parser.parse_args()

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
            *(["--log-file", args.master_log] if args.master_log else []),
        ])
        try:
            time.sleep(2)
            results = multiprocessing.Queue()
            per_client = args.slaves // args.clients
            clients = [
                multiprocessing.Process(target=client, args=(port, per_client, args.seconds, results))
                for _ in range(args.clients)
            ]
            for proc in clients:
                proc.start()
            figures = [results.get(timeout=args.seconds + 60) for _ in clients]
            for proc in clients:
                proc.join()
            time.sleep(2)  # let the recorder finish its last batch
        finally:
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
    print(f"slaves: {per_client * args.clients}, seconds: {elapsed:.1f}")
    print(f"builds completed: {done} ({done / elapsed:.0f}/s)")
    print(f"builds recorded in the database: {recorded} (logs: {logs})")
    print(f"longest pause between BUILD replies: {gap * 1000:.0f} ms "
          f"(at {gap_at:.1f} s into the run)")
    print(f"afterwards, the queue's first {QUEUE_SIZE} builds took {head_s * 1000:.0f} ms "
          f"to compute, and the next {QUEUE_SIZE} {page_s * 1000:.0f} ms")


def time_queue(dsn: str) -> tuple[float, float]:
    """How long the build queue's queries take on the database the run left:
    a recalculation from the head, and the page after it."""
    from piwheels.db import Database
    with Database(dsn) as db:
        start = time.perf_counter()
        _, cursor = db.pending_page("cp311", QUEUE_SIZE)
        head = time.perf_counter()
        db.pending_page("cp311", QUEUE_SIZE, after=cursor)
        return head - start, time.perf_counter() - head


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
