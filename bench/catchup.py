"""Benchmark: catching up with the upstream change log.

A fake upstream (the tests' FakePyPI, real HTTP and XML-RPC) holds 200k
synthetic change-log events: new releases and their source files for 50k
projects the farm already knows.  A real pypi_follower task starts from the
serial before them and applies the feed page by page (at most one XML-RPC
call a second, as against a real upstream); the clock stops when the stored
serial reaches the last event.  Prints events per second.

    python bench/catchup.py --events 200000 --page-size 50000
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import time
from pathlib import Path

import sqlalchemy as sa
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchdb import DEFAULT_SERVER, throwaway_database
from fake_pypi import FakePyPI

from piwheels.allow_list import AllowList
from piwheels.db import Database
from piwheels.master.pypi_follower import PyPIFollower
from piwheels.master.task import TaskControl
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, QUEUE_REQUESTS, SUPERVISOR
from piwheels.pypi_client import PyPIClient
from piwheels.transport import Socket

BIN = Path(sys.executable).parent


def seed(dsn: str, projects: int) -> None:
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO packages (package) "
            f"SELECT 'proj-' || n FROM generate_series(0, {projects - 1}) AS n")
    engine.dispose()


def events(projects: int, count: int) -> list[tuple[str, str, int, str]]:
    """New releases with their sdists, round-robin over the projects."""
    rows = []
    stamp = 1_700_000_000
    release = 0
    while len(rows) < count:
        name = f"proj-{release % projects}"
        version = f"{release // projects}.0"
        rows.append((name, version, stamp, "new release"))
        rows.append((name, version, stamp, f"add source file {name}-{version}.tar.gz"))
        release += 1
        stamp += 1
    return rows[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--projects", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    args = parser.parse_args()

    ctx = zmq.Context()
    with throwaway_database(args.server) as (dsn, master_dsn):
        seed(dsn, args.projects)
        with FakePyPI(page_size=args.page_size) as pypi:
            pypi.log_events(events(args.projects, args.events))
            sockets = [Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())]
            sockets[0].bind(SUPERVISOR.address)
            for protocol in (QUEUE_REQUESTS, INDEX_REQUESTS, BUILD_QUEUE):
                sock = Socket.make(ctx, zmq.PULL, protocol.reverse())
                sock.bind(protocol.address)
                sockets.append(sock)
            client = PyPIClient(simple_url=pypi.simple_url, json_url=pypi.json_url,
                                xmlrpc_url=pypi.xmlrpc_url)
            task = PyPIFollower(ctx, dsn=master_dsn, client=client, allow=AllowList(),
                                poll_interval_s=0.1, reconcile_interval_s=10**9)
            # the farm is known to be in step at serial 0: follow the feed, not a reconcile
            task.next_reconcile_s = float("inf")
            control = TaskControl(ctx, task.name)
            with Database(master_dsn) as db:
                start = time.perf_counter()
                task.start()
                while db.get_pypi_serial() < pypi.serial:
                    time.sleep(0.05)
                    for sock in sockets[1:]:  # what the follower tells the other tasks
                        while sock.zsocket.poll(0):
                            sock.recv()
                elapsed = time.perf_counter() - start
                count = db.statistics().get("versions")
            control.send("QUIT")
            task.join(30)
            control.close()
            for sock in sockets:
                sock.close()
        pages = -(-args.events // args.page_size)
        print(f"{args.events} events in {pages} pages of {args.page_size} "
              f"(XML-RPC: at most one call a second)")
        print(f"applied in {elapsed:.1f} s: {args.events / elapsed:.0f} events/s; "
              f"releases in the database: {count}")
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
