"""Benchmark: writing the output tree at the upstream index's scale.

Seeds a throw-away database with synthetic projects (each with a few releases,
every release built on two ABIs with one wheel, a log and an apt dependency)
and measures the index writer:

- a full rewrite into an empty output directory (every page and log written;
  goal for 100k projects: under 2 minutes), and again over the tree it wrote
  (every page compared, none changed);
- refreshing one project's pages after a build is recorded, both the writing
  alone and through a running index_writer task (goal: under 50 ms).

    python bench/index.py --packages 10000 100000
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module (the
# index writer's worker pool needs it): this folder goes to the end of the path
sys.path.append(sys.path.pop(0))

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
import zmq

from benchdb import DEFAULT_SERVER, throwaway_database

from piwheels.db import Database
from piwheels.index_pages import Site
from piwheels.config import OPTIONS
from piwheels.master.index_writer import IndexWriter
from piwheels.page_writer import PageWriter
from piwheels.master.task import TaskControl
from piwheels.protocols import INDEX_REQUESTS, SUPERVISOR
from piwheels.protocols import WheelFacts
from piwheels.records import BuildRecord
from piwheels.transport import Socket

ABIS = ("cp311", "cp313")
SUMMARY_INTERVAL_S = OPTIONS["summary_interval_s"].default
SITE = Site(name="Bench farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")
MOVED = Site(name="Bench farm", index_url="http://wheels.farm.test/simple/",
             upstream_simple="http://mirror.upstream.test/simple/")


def seed(dsn: str, packages: int, versions: int) -> None:
    """*packages* projects with *versions* releases each, every release built on both ABIs."""
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        # seeding writes the derived "built" flag itself, so the triggers can rest
        conn.exec_driver_sql("SET session_replication_role = replica")
        conn.exec_driver_sql("INSERT INTO build_targets (abi_tag, platform_tag) VALUES "
                             + ", ".join(f"('{abi}', 'linux_aarch64')" for abi in ABIS))
        conn.exec_driver_sql(
            "INSERT INTO packages (package, description) "
            "SELECT 'pkg-' || n, 'Synthetic project number ' || n "
            f"FROM generate_series(1, {packages}) AS n")
        conn.exec_driver_sql(
            "INSERT INTO package_names (name, package) SELECT package, package FROM packages")
        conn.exec_driver_sql(  # one project in ten is also known by another spelling
            "INSERT INTO package_names (name, package) "
            "SELECT 'Pkg_' || n, 'pkg-' || n "
            f"FROM generate_series(1, {packages}, 10) AS n")
        conn.exec_driver_sql(
            "INSERT INTO versions (package, version, released, has_sdist, built) "
            "SELECT 'pkg-' || n, v || '.0', "
            "       timestamptz '2025-01-01' + (n * interval '1 minute') + (v * interval '1 day'), "
            "       true, true "
            f"FROM generate_series(1, {packages}) AS n, generate_series(1, {versions}) AS v")
        conn.exec_driver_sql(
            "INSERT INTO builds (package, version, abi_tag, platform_tag, slave_label, builder, "
            "                    started, duration, status) "
            "SELECT package, version, abi_tag, platform_tag, 'seed', 'seed', "
            "       released + interval '1 hour', interval '95 seconds', 'success' "
            "FROM versions, build_targets")
        conn.exec_driver_sql(
            "INSERT INTO build_logs (build_id, log) "
            "SELECT build_id, 'Building ' || package || ' ' || version || E' ...\\n' || "
            "       repeat(E'compiling a module\\n', 20) || E'done\\n' "
            "FROM builds")
        conn.exec_driver_sql(
            "INSERT INTO files (filename, build_id, filesize, filehash, package_tag, "
            "                   package_version_tag, py_version_tag, abi_tag, platform_tag, "
            "                   requires_python, metadata_hash, published) "
            "SELECT replace(package, '-', '_') || '-' || version || '-' || abi_tag || '-' || "
            "       abi_tag || '-linux_aarch64.whl', "
            "       build_id, 10000 + mod(build_id, 90000), "
            "       md5(build_id::text) || md5('wheel' || build_id), "
            "       replace(package, '-', '_'), version, abi_tag, abi_tag, 'linux_aarch64', "
            "       '>=3.9', md5('meta' || build_id) || md5('data' || build_id), started "
            "FROM builds")
        conn.exec_driver_sql(
            "INSERT INTO dependencies (filename, tool, dependency) "
            "SELECT filename, 'apt', 'libc6' FROM files")
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


class RunningWriter:
    """A real index_writer task, as piw-master runs it."""

    def __init__(self, dsn: str, output: Path, site: Site, workers: Optional[int]) -> None:
        self.ctx = zmq.Context()
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.task = IndexWriter(self.ctx, dsn=dsn, output_path=output, site=site,
                                workers=workers, summary_interval_s=SUMMARY_INTERVAL_S)
        self.control = TaskControl(self.ctx, self.task.name)
        self.requests = Socket.make(self.ctx, zmq.PUSH, INDEX_REQUESTS)
        self.requests.connect(INDEX_REQUESTS.address)
        self.task.start()

    def idle(self) -> bool:
        while self.supervisor.zsocket.poll(0):  # STARTED once, FAILED if it fails
            name, payload = self.supervisor.recv()
            if name == "FAILED":
                raise RuntimeError(f"the index writer failed: {payload['error']}")
        status = self.task.status()
        return not (status["dirty"] or status["root_pending"] or status["home_pending"])

    def rewrite_all(self) -> float:
        """Send ALL and wait for every page, the root and the home page."""
        while not self.idle():  # its start-up writes
            time.sleep(0.01)
        start = time.perf_counter()
        self.requests.send("ALL")
        while self.task.status()["root_pending"] is False:  # until it has taken the request
            time.sleep(0.001)
        while not self.idle():
            time.sleep(0.01)
        return time.perf_counter() - start

    def close(self) -> None:
        self.control.send("QUIT")
        self.task.join(30)
        for sock in (self.control, self.requests, self.supervisor):
            sock.close()
        self.ctx.term()


def count_files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file())


def new_build(db: Database, package: str, version: str) -> str:
    """Record a fresh release of *package* with one successful build; its wheel's name."""
    now = datetime.now(timezone.utc)
    db.add_version(package, version, released=now, has_sdist=True)
    filename = f"{package.replace('-', '_')}-{version}-cp311-cp311-linux_aarch64.whl"
    digest = hashlib.sha256(filename.encode()).hexdigest()
    db.record_build(BuildRecord(
        package=package, version=version, abi_tag="cp311", slave_label="bench", started=now,
        duration=timedelta(seconds=42), status="success", log="a fresh build\n",
        files=(WheelFacts(
            filename=filename, size=12345, sha256=digest, package_tag=package.replace("-", "_"),
            version_tag=version, py_tag="cp311", abi_tag="cp311", platform_tag="linux_aarch64",
            requires_python=">=3.9", requires_dist=(), metadata=b"", metadata_sha256=digest,
            apt_dependencies=("libc6",)),),
    ))
    return filename


def time_one_package(dsn: str, output: Path, packages: int, repeats: int) -> None:
    """Refreshing one project after a build: the writing alone, then through the task."""
    db = Database(dsn)
    pages = PageWriter(db, output, SITE)
    times = []
    for i in range(repeats):
        package = f"pkg-{(i * 7919) % packages + 1}"
        filename = new_build(db, package, f"{100 + i}.0")
        start = time.perf_counter()
        pages.write_packages([package])
        times.append(time.perf_counter() - start)
        assert filename in (output / "simple" / package / "index.html").read_text()
    print(f"  one project's pages after a build, writing alone: median "
          f"{statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms "
          f"over {repeats} projects")

    writer = RunningWriter(dsn, output, SITE, workers=None)
    delays = []
    try:
        while not writer.idle():
            time.sleep(0.01)
        for i in range(repeats):
            package = f"pkg-{(i * 104729) % packages + 1}"
            filename = new_build(db, package, f"{200 + i}.0")
            page = output / "simple" / package / "index.json"
            start = time.perf_counter()
            writer.requests.send("PACKAGE", {"package": package})
            while filename not in page.read_text():
                if time.perf_counter() - start > 10:
                    raise RuntimeError(f"{package}'s page did not change within 10 s")
                time.sleep(0.001)
            delays.append(time.perf_counter() - start)
            time.sleep(0.6)  # a quiet spell between builds, as on a real farm
    finally:
        writer.close()
        db.close()
    print(f"  one project's pages after a build, request to new page through the task: "
          f"median {statistics.median(delays) * 1000:.1f} ms, "
          f"worst {max(delays) * 1000:.1f} ms")


def time_root(dsn: str, output: Path) -> None:
    """Rewriting the simple root, packages.json and the sitemap (a new project's first wheel)."""
    ctx = zmq.Context()
    writer = IndexWriter(ctx, dsn=dsn, output_path=output, site=SITE,
                         summary_interval_s=SUMMARY_INTERVAL_S)
    writer.open_resources()  # the task's thread would, before on_start
    writer.on_start()
    try:
        start = time.perf_counter()
        writer.write_root()
        print(f"  the simple root, packages.json and sitemap: "
              f"{time.perf_counter() - start:.2f} s")
    finally:
        writer.on_stop()
        writer.close_resources()
        for sock in writer._sockets:
            sock.close()
        ctx.term()


def run_scale(superuser_dsn: str, dsn: str, packages: int, versions: int, repeats: int,
              work: Path, workers: Optional[int]) -> None:
    start = time.perf_counter()
    seed(superuser_dsn, packages, versions)
    print(f"{packages} projects, {packages * versions} releases, "
          f"{packages * versions * len(ABIS)} wheels: seeded in "
          f"{time.perf_counter() - start:.0f} s")
    output = work / f"output-{packages}"
    writer = RunningWriter(dsn, output, SITE, workers)
    try:
        cold_s = writer.rewrite_all()
        files = count_files(output)
        print(f"  full rewrite into an empty directory: {cold_s:.1f} s "
              f"({files} files, {packages / cold_s:.0f} projects/s)")
    finally:
        writer.close()
    time_root(dsn, output)
    # a new address and upstream: every page changes (the logs stay as they are)
    writer = RunningWriter(dsn, output, MOVED, workers)
    try:
        written = writer.task.pages_written
        changed_s = writer.rewrite_all()
        print(f"  full rewrite, every page changed: {changed_s:.1f} s "
              f"({writer.task.pages_written - written} pages written, "
              f"{packages / changed_s:.0f} projects/s)")
        written = writer.task.pages_written
        warm_s = writer.rewrite_all()
        print(f"  full rewrite, nothing changed: {warm_s:.1f} s "
              f"({writer.task.pages_written - written} pages written)")
    finally:
        writer.close()
    time_one_package(dsn, output, packages, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--packages", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--versions", type=int, default=3, help="releases per project")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the output trees go (default: a temp dir, removed after)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes for full rewrites (default: one per CPU; "
                             "0: none, all in the task's thread)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-", dir=args.work_dir))
    try:
        for packages in args.packages:
            with throwaway_database(args.server) as (dsn, master_dsn):
                try:
                    run_scale(dsn, master_dsn, packages, args.versions, args.repeats, work,
                              args.workers)
                finally:
                    shutil.rmtree(work / f"output-{packages}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
