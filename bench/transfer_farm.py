"""bench/transfer.py's end-to-end run: a wheel from BUILT to published, through a real piw-master.

A real piw-master runs on a throw-away database (:mod:`benchdb`) seeded with
projects to build; a hand-driven slave in a process of its own says HELLO,
takes a BUILD, answers it with BUILT for a wheel it made, then serves the
file with the slave's real :class:`~piwheels.slave.file_sender.FileSender`.
The clock starts when BUILT is sent and is read three times: when the slave
has the master's RECEIVED (the file verified), when the wheel is at its URL
under ``simple/`` (verified, its rows committed, renamed into the index), and
when the project's simple page lists it (the index writer has written it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import sqlalchemy as sa
import zmq

from benchdb import DEFAULT_SERVER, throwaway_database
from transfer_parts import Link, free_port, make_wheel

from piwheels.protocols import PROTOCOL_VERSION, SLAVE
from piwheels.slave.file_sender import FileSender
from piwheels.storage import OutputTree
from piwheels.transport import CurveClient, Socket
from piwheels.wheel_facts import inspect_wheel

BIN = Path(sys.executable).parent
#: the ABI the seeded builds are for, and the bench slave's
ABI = "cp311"
PLATFORM = "linux_x86_64"
IDLE = {"stats": {"load_1m": None, "memory_free": None, "disk_free": None,
                  "temperature_c": None}}


def seed(dsn: str, packages: int) -> None:
    """*packages* projects of one release each, all to be built for :data:`ABI`."""
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO packages (package) "
            f"SELECT 'bench-blob-' || n FROM generate_series(1, {packages}) AS n")
        conn.exec_driver_sql(
            "INSERT INTO versions (package, version, released, has_sdist) "
            "SELECT 'bench-blob-' || n, '1.0', now() - n * interval '1 second', true "
            f"FROM generate_series(1, {packages}) AS n")
        conn.exec_driver_sql("INSERT INTO build_targets (abi_tag, platform_tag) "
                             f"VALUES ('{ABI}', '{PLATFORM}')")
    engine.dispose()


@dataclass(frozen=True)
class Master:
    """A running piw-master: where its slaves connect, where it publishes, its pid."""

    slave_address: str
    file_address: str
    output: Path
    pid: int


@contextlib.contextmanager
def running_master(work: Path, host: str, packages: int, chunk_size: int, window: int,
                   key_args: list[str], server: str = DEFAULT_SERVER) -> Iterator[Master]:
    with throwaway_database(server) as (dsn, master_dsn):
        seed(dsn, packages)
        output = work / "output"
        slave_port, file_port = free_port(host), free_port(host)
        log = open(work / "master.log", "wb")
        master = subprocess.Popen([
            str(BIN / "piw-master"), "-v", "--dsn", master_dsn, "--output-path", str(output),
            "--pypi-simple", "http://127.0.0.1:1/simple/",
            "--slave-bind", f"tcp://{host}:{slave_port}",
            "--file-bind", f"tcp://{host}:{file_port}",
            "--containment", "optional", "--sleep-interval", "0.05", "--queue-interval", "1",
            "--chunk-size", str(chunk_size), "--transfer-window", str(window), *key_args,
        ], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield Master(f"tcp://{host}:{slave_port}", f"tcp://{host}:{file_port}", output,
                         master.pid)
        finally:
            master.terminate()
            master.wait(60)
            log.close()


@dataclass(frozen=True)
class FarmTimes:
    """Seconds from BUILT to each step, and the wheel's size in bytes."""

    verified_s: float
    in_place_s: float
    listed_s: float
    size: int


class BenchSlave:
    """A hand-driven slave: real protocol messages, no builds (it makes its wheels)."""

    def __init__(self, master: Master, curve: Optional[CurveClient]) -> None:
        self.ctx = zmq.Context()
        self.sock = Socket.make(self.ctx, zmq.DEALER, SLAVE, curve_client=curve)
        self.sock.connect(master.slave_address)
        self.files = FileSender(self.ctx, master.file_address, curve=curve)
        self.tree = OutputTree(master.output)
        self.slave_id = 0

    def request(self, name: str, payload: Optional[dict] = None,
                timeout_s: float = 60) -> tuple[str, dict]:
        self.sock.send(name, payload)
        if not self.sock.zsocket.poll(int(timeout_s * 1000)):
            raise SystemExit(f"the master did not answer {name}")
        return self.sock.recv()

    def hello(self) -> None:
        name, ack = self.request("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": f"bench-{os.getpid()}",
            "python_tag": ABI, "abi_tag": ABI, "platform_tag": PLATFORM,
            "python_version": "3.11.7", "pip_version": "24.0", "os": "bench",
            "image": "e" * 64, "build_timeout_s": 3600.0, "building": None,
            # it builds nothing, so contains nothing (the master takes --containment optional)
            "containment": "none: transfer benchmark slave", "platforms": [PLATFORM]})
        if name != "ACK":
            raise SystemExit(f"HELLO answered with {name}: {ack}")
        self.slave_id = ack["slave_id"]

    def next_build(self) -> tuple[str, str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            name, payload = self.request("IDLE", IDLE)
            if name == "BUILD":
                return payload["package"], payload["version"]
            if name != "SLEEP":
                raise SystemExit(f"IDLE answered with {name}: {payload}")
            time.sleep(0.05)
        raise SystemExit("the master handed out no build")

    def build_and_send(self, package: str, version: str, wheel: Path) -> FarmTimes:
        facts = inspect_wheel(wheel, find_apt_deps=False)
        start = time.perf_counter()
        name, payload = self.request("BUILT", {
            "package": package, "version": version, "success": True, "duration_s": 1.0,
            "log": "made by the transfer benchmark\n", "reason": None,
            "files": [facts.to_dict()]})
        if name != "SEND":
            raise SystemExit(f"BUILT answered with {name}: {payload}")
        self.files.offer(self.slave_id, wheel, facts.size, facts.sha256)
        outcome = None
        while outcome is None:
            if not self.files.socket.zsocket.poll(60_000):
                raise SystemExit("the file transfer stalled")
            outcome = self.files.handle()
        verified = time.perf_counter()
        if not outcome[0]:
            raise SystemExit(f"the master rejected the wheel: {outcome[1]}")
        name, payload = self.request("SENT", {"filename": wheel.name})
        if name != "DONE":
            raise SystemExit(f"SENT answered with {name}: {payload}")
        published = self.tree.wheel(package, wheel.name)
        page = self.tree.simple_dir(package) / "index.html"
        in_place = listed = None
        deadline = time.monotonic() + 60
        while listed is None and time.monotonic() < deadline:
            now = time.perf_counter()
            if in_place is None and published.exists():
                in_place = now
            if in_place is not None and page.exists() and wheel.name in page.read_text():
                listed = now
            time.sleep(0.0005)
        if listed is None:
            raise SystemExit(f"{wheel.name} was never published")
        return FarmTimes(verified - start, in_place - start, listed - start, facts.size)

    def close(self) -> None:
        self.files.close()
        self.sock.close()
        self.ctx.term()


def farm_slave(link: Link, master: Master, curve: Optional[CurveClient], work: Path, size: int,
               conn) -> None:
    """The slave's process: for each ``go`` from *conn*, take a build, make its wheel,
    say ``ready`` and, at ``start``, send it; answer with the :class:`FarmTimes`."""
    link.enter_slave_side()
    slave = BenchSlave(master, curve)
    slave.hello()
    blob = os.urandom(size)
    while conn.recv() == "go":
        package, version = slave.next_build()
        wheel = make_wheel(work, size, name=package, version=version, blob=blob)
        conn.send("ready")
        conn.recv()
        conn.send(slave.build_and_send(package, version, wheel))
        wheel.unlink()
    slave.close()
