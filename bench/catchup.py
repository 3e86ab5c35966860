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
from pathlib import Path

# bench/queue.py must not stand in for the standard library's queue module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_pypi import FakePyPI  # noqa: E402

from piwheels.allow_list import AllowList  # noqa: E402
from piwheels.db import Database  # noqa: E402
from piwheels.master.pypi_follower import PyPIFollower  # noqa: E402
from piwheels.master.task import TaskControl  # noqa: E402
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, QUEUE_REQUESTS, SUPERVISOR  # noqa: E402
from piwheels.pypi_client import PyPIClient  # noqa: E402
from piwheels.transport import Socket  # noqa: E402

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
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--projects", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    args = parser.parse_args()

    name = f"piwheels_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
    dsn = sa.engine.make_url(args.server).set(database=name).render_as_string(False)
    master_dsn = sa.engine.make_url(dsn).set(username=name).render_as_string(False)
    ctx = zmq.Context()
    try:
        subprocess.run([str(BIN / "piw-initdb"), "--dsn", dsn, "--user", name, "-y", "-q"],
                       check=True)
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
    finally:
        ctx.destroy(linger=0)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()


if __name__ == "__main__":
    main()
