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

import argparse
import cProfile
import hashlib
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
import zmq

from piwheels.db import Database
from piwheels.index_pages import Site
from piwheels.master.index_writer import IndexWriter
from piwheels.master.task import TaskControl
from piwheels.protocols import INDEX_REQUESTS, SUPERVISOR
from piwheels.records import BuildRecord, FileRecord
from piwheels.transport import Socket

BIN = Path(sys.executable).parent
ABIS = ("cp311", "cp313")
SITE = Site(name="Bench farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")


def seed(dsn: str, packages: int, versions: int) -> None:
    """*packages* projects with *versions* releases each, every release built on both ABIs."""
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        # seeding writes the derived "built" flag itself, so the triggers can rest
        conn.exec_driver_sql("SET session_replication_role = replica")
        conn.exec_driver_sql("INSERT INTO build_abis (abi_tag) VALUES "
                             + ", ".join(f"('{abi}')" for abi in ABIS))
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
            "INSERT INTO builds (package, version, abi_tag, slave_label, started, duration, "
            "                    status) "
            "SELECT package, version, abi_tag, 'seed', released + interval '1 hour', "
            "       interval '95 seconds', 'success' "
            "FROM versions, build_abis")
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


class BenchWriter:
    """An IndexWriter driven from this thread, so its work alone is timed."""

    def __init__(self, dsn: str, output: Path) -> None:
        self.ctx = zmq.Context()
        self.writer = IndexWriter(self.ctx, dsn=dsn, output_path=output, site=SITE)
        self.writer.on_start()

    def rewrite_all(self) -> float:
        start = time.perf_counter()
        self.writer.rewrite_all()
        while self.writer.dirty or self.writer.root_dirty or self.writer.home_dirty:
            self.writer.flush()
        return time.perf_counter() - start

    def close(self) -> None:
        self.writer.on_stop()
        for sock in self.writer._sockets:
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
        files=(FileRecord(
            filename=filename, size=12345, sha256=digest, package_tag=package.replace("-", "_"),
            version_tag=version, py_tag="cp311", abi_tag="cp311", platform_tag="linux_aarch64",
            requires_python=">=3.9", metadata_sha256=digest,
            dependencies={"apt": frozenset({"libc6"})}),),
    ))
    return filename


def time_one_package(dsn: str, output: Path, packages: int, repeats: int) -> None:
    """Refreshing one project after a build: the writing alone, then through the task."""
    bench = BenchWriter(dsn, output)
    db = Database(dsn)
    times = []
    try:
        for i in range(repeats):
            package = f"pkg-{(i * 7919) % packages + 1}"
            filename = new_build(db, package, f"{100 + i}.0")
            start = time.perf_counter()
            bench.writer.write_package(package)
            times.append(time.perf_counter() - start)
            assert filename in (output / "simple" / package / "index.html").read_text()
    finally:
        bench.close()
    print(f"  one project's pages after a build, writing alone: median "
          f"{statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms "
          f"over {repeats} projects")

    ctx = zmq.Context()
    supervisor = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
    supervisor.bind(SUPERVISOR.address)
    task = IndexWriter(ctx, dsn=dsn, output_path=output, site=SITE)
    control = TaskControl(ctx, task.name)
    requests = Socket.make(ctx, zmq.PUSH, INDEX_REQUESTS)
    requests.connect(INDEX_REQUESTS.address)
    task.start()
    delays = []
    try:
        time.sleep(1.0)  # let its first flush of the home and root pages pass
        for i in range(repeats):
            package = f"pkg-{(i * 104729) % packages + 1}"
            filename = new_build(db, package, f"{200 + i}.0")
            page = output / "simple" / package / "index.json"
            start = time.perf_counter()
            requests.send("PACKAGE", {"package": package})
            while filename not in page.read_text():
                if time.perf_counter() - start > 10:
                    raise RuntimeError(f"{package}'s page did not change within 10 s")
                time.sleep(0.001)
            delays.append(time.perf_counter() - start)
            time.sleep(0.6)  # a quiet spell between builds, as on a real farm
    finally:
        control.send("QUIT")
        task.join(10)
        for sock in (control, requests, supervisor):
            sock.close()
        ctx.term()
        db.close()
    print(f"  one project's pages after a build, request to page through the task: median "
          f"{statistics.median(delays) * 1000:.1f} ms, worst {max(delays) * 1000:.1f} ms")


def run_scale(superuser_dsn: str, dsn: str, packages: int, versions: int, repeats: int,
              work: Path, profile: bool) -> None:
    start = time.perf_counter()
    seed(superuser_dsn, packages, versions)
    print(f"{packages} projects, {packages * versions} releases, "
          f"{packages * versions * len(ABIS)} wheels: seeded in "
          f"{time.perf_counter() - start:.0f} s")
    output = work / f"output-{packages}"
    bench = BenchWriter(dsn, output)
    try:
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        cold_s = bench.rewrite_all()
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        files = count_files(output)
        print(f"  full rewrite into an empty directory: {cold_s:.1f} s "
              f"({files} files, {packages / cold_s:.0f} projects/s)")
        written = bench.writer.pages_written
        warm_s = bench.rewrite_all()
        print(f"  full rewrite over that tree: {warm_s:.1f} s "
              f"({bench.writer.pages_written - written} pages changed)")
    finally:
        bench.close()
    time_one_package(dsn, output, packages, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--packages", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--versions", type=int, default=3, help="releases per project")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the output trees go (default: a temp dir, removed after)")
    parser.add_argument("--profile", action="store_true", help="profile the first full rewrite")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-", dir=args.work_dir))
    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT")
    try:
        for packages in args.packages:
            name = f"piwheels_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
            dsn = sa.engine.make_url(args.server).set(database=name).render_as_string(False)
            try:
                subprocess.run([str(BIN / "piw-initdb"), "--dsn", dsn, "--user", name, "-y",
                                "-q"], check=True)
                master_dsn = sa.engine.make_url(dsn).set(username=name).render_as_string(False)
                run_scale(dsn, master_dsn, packages, args.versions, args.repeats, work,
                          args.profile)
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
                shutil.rmtree(work / f"output-{packages}", ignore_errors=True)
    finally:
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
