"""Benchmark: one large wheel through the file-transfer protocol vs a plain TCP copy.

The protocol run uses the real tasks on loopback TCP: the slave's FileSender
serves chunks, the master's FileReceiver pulls them (credit window, CRC-32
per chunk), writes the temp file, then checks size, SHA-256 and the whole
wheel before reporting it VERIFIED; the clock stops there.  The plain run
sends the same bytes over one TCP connection into a file.  Prints MB/s of
both and their ratio, and the CPU both ends spent: when they share this
machine's cores, that CPU divided by the cores bounds the transfer's time.

    python bench/transfer.py --size-mb 50 --chunk-size 1048576 --window 4

With ``--link-mbit N`` (root only) both runs cross a veth pair into a network
namespace of the slave's own, shaped to N Mbit/s each way: the farm's case,
where the slave is another machine and the network sets the pace.  With
``--curve`` the file socket is encrypted and authenticated as in a farm with
keys (piw-keys): a master key pair, the slave's key enrolled, ZAP checking it.
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import zmq

from piwheels.config import OPTIONS
from piwheels.keys import PUBLIC_SUFFIX, KeyPair, load_key_pair, make_key_pair, public_path
from piwheels.master.authenticator import Authenticator
from piwheels.master.file_receiver import FileReceiver
from piwheels.protocols import SUPERVISOR, TRANSFER_REQUESTS, TRANSFER_RESULTS
from piwheels.slave.file_sender import FileSender
from piwheels.transport import CurveClient, CurveServer, Socket
from piwheels.wheel_facts import UnpackLimits, inspect_wheel

MB = 1024 * 1024


def make_wheel(directory: Path, size: int) -> Path:
    """A valid pure wheel of about *size* bytes (random data, stored, so it does not shrink)."""
    import base64

    path = directory / "bench_blob-1.0-py3-none-any.whl"
    blob = os.urandom(size)
    members = {
        "bench_blob/blob.bin": blob,
        "bench_blob-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: bench-blob\nVersion: 1.0\n",
        "bench_blob-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "bench_blob-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr("bench_blob-1.0.dist-info/RECORD", record)
    return path


def cpu_s(who: int) -> float:
    """CPU seconds (user and system) used so far by this process or its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Link:
    """Where the slave's side runs: beside the master on loopback, or in a network
    namespace of its own (see :func:`shaped_link`)."""

    master_host: str = "127.0.0.1"
    slave_namespace: Optional[str] = None

    def enter_slave_side(self) -> None:
        """Called first in the slave's (forked, single-threaded) process."""
        if self.slave_namespace is None:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self.slave_namespace}") as namespace:
            if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the slave's namespace failed")


@contextlib.contextmanager
def shaped_link(mbit: int) -> Iterator[Link]:
    """A veth pair into a fresh network namespace, each way limited to *mbit* Mbit/s."""
    namespace = f"piw-bench-{os.getpid()}"
    master_dev, slave_dev = f"piwm{os.getpid()}", f"piws{os.getpid()}"
    master_ip, slave_ip = "10.213.0.1", "10.213.0.2"
    shape = ["root", "tbf", "rate", f"{mbit}mbit", "burst", "512kb", "latency", "50ms"]
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for command in (
            ["ip", "link", "add", master_dev, "type", "veth", "peer", "name", slave_dev,
             "netns", namespace],
            ["ip", "addr", "add", f"{master_ip}/30", "dev", master_dev],
            ["ip", "link", "set", master_dev, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{slave_ip}/30", "dev", slave_dev],
            ["ip", "-n", namespace, "link", "set", slave_dev, "up"],
            ["tc", "qdisc", "add", "dev", master_dev, *shape],
            ["tc", "-n", namespace, "qdisc", "add", "dev", slave_dev, *shape],
        ):
            subprocess.run(command, check=True)
        yield Link(master_ip, namespace)
    finally:  # the pair goes with the namespace
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class TimedReceiver(FileReceiver):
    """Notes when (and at what CPU cost) the last chunk is on disk, before verification."""

    def _complete(self, transfer) -> None:
        self.received_at = time.perf_counter()
        self.cpu_at_disk = cpu_s(resource.RUSAGE_SELF)
        super()._complete(transfer)


@dataclass(frozen=True)
class Keys:
    """A farm's keys for one run: the master's pair, the slave's key file (enrolled)."""

    master: KeyPair
    slave_secret: Path
    enrolled: Path

    @classmethod
    def make(cls, directory: Path) -> "Keys":
        master, _ = make_key_pair(directory / "master.key_secret")
        slave_secret = directory / "slave" / "bench.key_secret"
        make_key_pair(slave_secret)
        enrolled = directory / "authorized"
        enrolled.mkdir()
        (enrolled / f"bench{PUBLIC_SUFFIX}").write_bytes(public_path(slave_secret).read_bytes())
        return cls(master, slave_secret, enrolled)

    def client(self) -> CurveClient:
        return CurveClient(keys=load_key_pair(self.slave_secret), server_public=self.master.public)


def serve(link: Link, address: str, wheel: Path, size: int, sha256: str, cpu,
          keys: Optional[Keys] = None) -> None:
    """The slave's side: offer the file and answer FETCHes until RECEIVED.

    *cpu* gets the CPU seconds this process had spent by then (a forked child
    starts from zero), leaving out its teardown.
    """
    link.enter_slave_side()
    ctx = zmq.Context()
    sender = FileSender(ctx, address, curve=keys.client() if keys else None)
    sender.offer(1, wheel, size, sha256)
    while sender.handle() is None:
        pass
    cpu.value = cpu_s(resource.RUSAGE_SELF)
    sender.close()
    ctx.term()


def protocol_run(link: Link, wheel: Path, work: Path, chunk_size: int,
                 window: int, keys: Optional[Keys] = None) -> tuple[float, float, float]:
    """Seconds from OFFER to the last chunk written and to VERIFIED, through the real
    tasks, and the CPU seconds both ends spent on the first (all threads)."""
    ctx = zmq.Context()
    address = f"tcp://{link.master_host}:{free_port(link.master_host)}"
    supervisor = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
    supervisor.bind(SUPERVISOR.address)
    results = Socket.make(ctx, zmq.PULL, TRANSFER_RESULTS.reverse())
    results.bind(TRANSFER_RESULTS.address)
    auth = None
    if keys is not None:  # before the file socket binds, as piw-master does
        auth = Authenticator(ctx, keys.enrolled)
        auth.start()
    receiver = TimedReceiver(ctx, file_bind=address, output_path=work,
                            chunk_size=chunk_size, window=window, timeout_s=10, retries=3,
                            max_wheel_size=2**31, deadline_s=OPTIONS["transfer_deadline_s"].default,
                            unpack_limits=UnpackLimits(
                                max_unpacked=OPTIONS["max_unpacked_size"].default,
                                max_ratio=OPTIONS["max_compression_ratio"].default),
                            curve=CurveServer(keys=keys.master, enrolled_dir=str(keys.enrolled))
                            if keys else None)
    requests = Socket.make(ctx, zmq.PUSH, TRANSFER_REQUESTS)
    requests.connect(TRANSFER_REQUESTS.address)
    receiver.start()
    data_size = wheel.stat().st_size
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requests.send("EXPECT", {"slave_id": 1, "package": "bench-blob", "version": "1.0",
                             "builder_abi": "cp311", "builder_platform": "linux_x86_64",
                             "key_id": load_key_pair(keys.slave_secret).key_id if keys else None,
                             "claimed": inspect_wheel(wheel, find_apt_deps=False).to_dict()})
    time.sleep(0.2)
    # the slave is another process (another machine, in a farm), as in real life
    slave_cpu = multiprocessing.Value("d", 0.0)
    slave = multiprocessing.Process(target=serve,
                                    args=(link, address, wheel, data_size, sha256, slave_cpu, keys))
    start, master_cpu = time.perf_counter(), cpu_s(resource.RUSAGE_SELF)
    slave.start()
    verdict = [results.recv()]
    slave.join()
    cpu = receiver.cpu_at_disk - master_cpu + slave_cpu.value
    elapsed = time.perf_counter() - start
    transferred = receiver.received_at - start
    name, payload = verdict[0]
    if name != "VERIFIED":
        raise SystemExit(f"transfer failed: {payload}")
    Path(payload["file"]["path"]).unlink()
    receiver._quit = True  # the bench owns the task; no supervisor to ask
    receiver.join(5)
    for sock in (supervisor, results, requests):
        sock.close()
    if auth is not None:
        auth.stop()
    ctx.destroy(linger=0)
    return transferred, elapsed, cpu


def plain_run(link: Link, wheel: Path, work: Path, buffer_size: int) -> tuple[float, float]:
    """Seconds to copy the file over one TCP connection into a file, and the CPU
    seconds both ends spent."""
    server = socket.create_server((link.master_host, 0))
    port = server.getsockname()[1]
    target = work / "plain.bin"

    def send():
        link.enter_slave_side()
        with socket.create_connection((link.master_host, port)) as conn, open(wheel, "rb") as f:
            while True:
                data = f.read(buffer_size)
                if not data:
                    break
                conn.sendall(data)

    sender = multiprocessing.Process(target=send)
    start, cpu = time.perf_counter(), cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
    sender.start()
    conn, _ = server.accept()
    with conn, open(target, "wb") as out:
        while True:
            data = conn.recv(buffer_size)
            if not data:
                break
            out.write(data)
    elapsed = time.perf_counter() - start
    sender.join()
    cpu = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN) - cpu
    server.close()
    target.unlink()
    return elapsed, cpu


def integrity_only(wheel: Path, chunk_size: int) -> float:
    """Seconds for the protocol's checks alone, from memory: the master's SHA-256 and a
    CRC-32 of every chunk at each end; work that no way of moving the bytes saves."""
    data = memoryview(wheel.read_bytes())
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    for _ in range(2):
        for offset in range(0, len(data), chunk_size):
            zlib.crc32(data[offset:offset + chunk_size])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=OPTIONS["chunk_size"].default,
                        help="(default: the master's)")
    parser.add_argument("--window", type=int, default=OPTIONS["transfer_window"].default,
                        help="(default: the master's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--link-mbit", type=int, default=None,
                        help="cross a link shaped to this many Mbit/s, not loopback (root only)")
    parser.add_argument("--curve", action="store_true",
                        help="encrypt the file socket with CURVE keys, as a farm with keys does")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        link = Link() if args.link_mbit is None else stack.enter_context(
            shaped_link(args.link_mbit))
        run(args, link)


def run(args: argparse.Namespace, link: Link) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel = make_wheel(work, args.size_mb * MB)
        keys = Keys.make(work / "keys") if args.curve else None
        size_mb = wheel.stat().st_size / MB
        protocol, plain, checks = [], [], []
        for _ in range(args.rounds):
            protocol.append(protocol_run(link, wheel, work, args.chunk_size, args.window, keys))
            plain.append(plain_run(link, wheel, work, args.chunk_size))
            checks.append(integrity_only(wheel, args.chunk_size))
    transfer = [t for t, _, _ in protocol]
    verified = [v for _, v, _ in protocol]
    copy = [t for t, _ in plain]
    best_transfer, best_verified, best_plain = min(transfer), min(verified), min(copy)
    where = "loopback" if args.link_mbit is None else f"a {args.link_mbit} Mbit/s link"
    print(f"file: {size_mb:.1f} MB, chunk {args.chunk_size} B, window {args.window}, "
          f"{args.rounds} rounds over {where}{' with CURVE' if args.curve else ''} "
          f"(best and median)")
    print(f"transfer protocol, file on disk:       {size_mb / best_transfer:.0f} MB/s "
          f"(median {size_mb / statistics.median(transfer):.0f})")
    print(f"... and verified (hash, zip, RECORD):  {size_mb / best_verified:.0f} MB/s "
          f"(median {size_mb / statistics.median(verified):.0f})")
    print(f"plain TCP copy:                        {size_mb / best_plain:.0f} MB/s "
          f"(median {size_mb / statistics.median(copy):.0f})")
    print(f"ratio: transfer {best_plain / best_transfer:.0%}, transfer and verification "
          f"{best_plain / best_verified:.0%} of the plain copy's speed")
    # Both ends share this machine's cores, so the CPU they spend together
    # bounds the wall time from below, whatever overlaps with what.
    cores = os.cpu_count() or 1
    transfer_cpu = min(cpu for _, _, cpu in protocol)
    floor_s = transfer_cpu / cores
    print(f"CPU of both ends (least): transfer to disk {transfer_cpu * 1000:.0f} ms, "
          f"plain copy {min(cpu for _, cpu in plain) * 1000:.0f} ms; "
          f"the checks alone {min(checks) * 1000:.0f} ms")
    if args.link_mbit is not None:
        return  # the link, not the CPU, sets the pace
    print(f"on {cores} cores that CPU takes {floor_s * 1000:.0f} ms at the very least: "
          f"at most {size_mb / floor_s:.0f} MB/s, {best_plain / floor_s:.0%} of the plain copy")


if __name__ == "__main__":
    main()
