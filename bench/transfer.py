"""Benchmark: wheels through the file-transfer protocol vs a plain memory-to-memory TCP copy.

Three runs, each round beside a plain copy of the same bytes over one TCP
connection, memory to memory (``sendall`` / ``recv_into``, no disk):

* end to end, through a real piw-master on a throw-away database (see
  :mod:`transfer_farm`): from BUILT to the wheel verified, recorded and
  published (at its URL under ``simple/``, then listed on its simple page);
  the figure to hold against the old master's;
* the file receiver alone, in this process (the slave's FileSender in
  another): from OFFER to the last chunk on disk and to VERIFIED, with the
  receiver's CPU per MB (its thread, ZeroMQ's, the verification's);
* ``--slaves`` slaves sending ``--slave-size-mb`` wheels at once to that
  receiver: the aggregate rate and CPU per MB, beside one such wheel alone.

    python bench/transfer.py --size-mb 50 --rounds 5

With ``--link-mbit N`` (root only) every slave runs in a network namespace
of its own behind a veth pair shaped to N Mbit/s each way: the farm's case,
where the slave is another machine and the network sets the pace.  With
``--curve`` the sockets are encrypted and authenticated as in a farm with
keys (piw-keys): a master key pair, the slave's key enrolled, ZAP checking it.
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import resource
import socket
import statistics
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import zmq

from transfer_farm import FarmTimes, farm_slave, running_master
from transfer_parts import MB, Keys, Link, free_port, make_wheel, shaped_link, tree_cpu_s

from piwheels.config import OPTIONS
from piwheels.master.authenticator import Authenticator
from piwheels.master.file_receiver import FileReceiver
from piwheels.protocols import SUPERVISOR, TRANSFER_REQUESTS, TRANSFER_RESULTS
from piwheels.slave.file_sender import FileSender
from piwheels.transport import CurveServer, Socket
from piwheels.wheel_facts import UnpackLimits, inspect_wheel


def thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


# --- the plain copy ------------------------------------------------------------------


def _copy_sender(link: Link, port: int, size: int, conn) -> None:
    link.enter_slave_side()
    data = os.urandom(size)
    with socket.create_connection((link.master_host, port)) as sock:
        sock.recv(1)
        start = thread_cpu_s()
        sock.sendall(data)
        conn.send(thread_cpu_s() - start)


def memory_copy_run(link: Link, size: int, buffer: memoryview) -> tuple[float, float]:
    """Seconds to copy *size* bytes over one TCP connection from the sender's memory
    into *buffer*, and the CPU seconds both ends spent."""
    server = socket.create_server((link.master_host, 0))
    ours, theirs = multiprocessing.Pipe()
    sender = multiprocessing.Process(target=_copy_sender,
                                     args=(link, server.getsockname()[1], size, theirs))
    sender.start()
    conn, _ = server.accept()
    with conn:
        cpu = thread_cpu_s()
        start = time.perf_counter()
        conn.sendall(b"g")
        got = 0
        while got < size:
            n = conn.recv_into(buffer[got:size])
            if not n:
                raise SystemExit("the plain copy's sender hung up")
            got += n
        elapsed = time.perf_counter() - start
        cpu = thread_cpu_s() - cpu + ours.recv()
    sender.join()
    server.close()
    return elapsed, cpu


# --- the file receiver, in this process --------------------------------------------------


class TimedReceiver(FileReceiver):
    """Notes when (and at what CPU cost) the last chunk is on disk, before verification."""

    def _complete(self, transfer) -> None:
        self.received_at = time.perf_counter()
        self.cpu_at_disk = tree_cpu_s(os.getpid(), self.bench_slaves)
        super()._complete(transfer)


class ReceiverRig:
    """A running file receiver and the slave driver's side of it (the bench plays it)."""

    def __init__(self, link: Link, work: Path, chunk_size: int, window: int,
                 keys: Optional[Keys]) -> None:
        self.ctx = zmq.Context()
        self.keys = keys
        self.address = f"tcp://{link.master_host}:{free_port(link.master_host)}"
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.results = Socket.make(self.ctx, zmq.PULL, TRANSFER_RESULTS.reverse())
        self.results.bind(TRANSFER_RESULTS.address)
        self.auth = None
        if keys is not None:  # before the file socket binds, as piw-master does
            self.auth = Authenticator(self.ctx, keys.enrolled)
            self.auth.start()
        default = {name: OPTIONS[name].default for name in OPTIONS}
        self.receiver = TimedReceiver(
            self.ctx, file_bind=self.address, output_path=work / "output",
            chunk_size=chunk_size, window=window, timeout_s=default["transfer_timeout_s"],
            retries=default["transfer_retries"], max_wheel_size=2**31,
            deadline_s=default["transfer_deadline_s"],
            unpack_limits=UnpackLimits(max_unpacked=default["max_unpacked_size"],
                                       max_ratio=default["max_compression_ratio"]),
            curve=CurveServer(keys=keys.master, enrolled_dir=str(keys.enrolled))
            if keys else None)
        self.receiver.bench_slaves = ()
        self.requests = Socket.make(self.ctx, zmq.PUSH, TRANSFER_REQUESTS)
        self.requests.connect(TRANSFER_REQUESTS.address)
        self.receiver.start()

    def expect(self, wheel: Path, slave_id: int) -> None:
        facts = inspect_wheel(wheel, find_apt_deps=False)
        self.requests.send("EXPECT", {
            "slave_id": slave_id, "package": facts.package_tag.replace("_", "-"),
            "version": facts.version_tag, "builder_abi": "cp311",
            "builder_platform": "linux_x86_64", "builder_platforms": ["linux_x86_64"],
            "key_id": self.keys.key_id() if self.keys else None, "claimed": facts.to_dict()})

    def verdict(self) -> dict:
        if not self.results.zsocket.poll(120_000):
            raise SystemExit("the receiver gave no verdict")
        name, payload = self.results.recv()
        if name != "VERIFIED":
            raise SystemExit(f"transfer failed: {payload}")
        Path(payload["file"]["path"]).unlink()
        return payload

    def close(self) -> None:
        self.receiver._quit = True  # the bench owns the task; no supervisor to ask
        self.receiver.join(10)
        for sock in (self.supervisor, self.results, self.requests):
            sock.close()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=0)


@contextlib.contextmanager
def receiver_rig(*args) -> Iterator[ReceiverRig]:
    rig = ReceiverRig(*args)
    try:
        yield rig
    finally:
        rig.close()


def serve(link: Link, address: str, wheels: list[tuple[int, Path]], keys: Optional[Keys],
          conn) -> None:
    """Slaves' sides, one FileSender each: at ``go``, offer every file (at once) and
    answer FETCHes until each is RECEIVED; send back this process's CPU seconds."""
    link.enter_slave_side()
    ctx = zmq.Context()
    senders = {}
    offers = []
    for slave_id, wheel in wheels:
        sender = FileSender(ctx, address, curve=keys.client() if keys else None)
        senders[sender.socket.zsocket] = sender
        data = wheel.read_bytes()
        offers.append((sender, slave_id, wheel, len(data), hashlib.sha256(data).hexdigest()))
    poller = zmq.Poller()
    for zsocket in senders:
        poller.register(zsocket, zmq.POLLIN)
    time.sleep(0.2)  # connected before the clock starts
    conn.send("ready")
    conn.recv()
    cpu = thread_cpu_s()
    for sender, *offer in offers:
        sender.offer(*offer)
    waiting = len(senders)
    while waiting:
        for zsocket, _ in poller.poll(60_000) or [(None, None)]:
            if zsocket is None:
                raise SystemExit("a slave's transfer stalled")
            outcome = senders[zsocket].handle()
            if outcome is not None:
                if not outcome[0]:
                    raise SystemExit(f"the receiver refused a wheel: {outcome[1]}")
                waiting -= 1
    conn.send(thread_cpu_s() - cpu)
    for sender in senders.values():
        sender.close()
    ctx.term()


@dataclass(frozen=True)
class ReceiverTimes:
    """One round of the receiver: seconds to the last chunk on disk (None for several
    files) and to the last VERIFIED; CPU seconds of the receiver (all its threads
    and processes) to VERIFIED, to the last chunk on disk, and of the slaves."""

    to_disk_s: Optional[float]
    verified_s: float
    receiver_cpu_s: float
    receiver_cpu_to_disk_s: Optional[float]
    slave_cpu_s: float


def receiver_run(rig: ReceiverRig, link: Link, wheels: list[Path],
                 processes: int = 1) -> ReceiverTimes:
    """All *wheels* at once, each from a slave of its own, the slaves spread over
    *processes* (the slaves are other machines in a farm, another process here)."""
    plan = [(slave_id, wheel) for slave_id, wheel in enumerate(wheels, 1)]
    for slave_id, wheel in plan:
        rig.expect(wheel, slave_id)
    pipes, slaves = [], []
    for n in range(processes):
        ours, theirs = multiprocessing.Pipe()
        slave = multiprocessing.Process(target=serve, args=(
            link, rig.address, plan[n::processes], rig.keys, theirs))
        slave.start()
        pipes.append(ours)
        slaves.append(slave)
    for pipe in pipes:
        pipe.recv()
    rig.receiver.bench_slaves = tuple(slave.pid for slave in slaves)
    cpu = tree_cpu_s(os.getpid(), rig.receiver.bench_slaves)
    start = time.perf_counter()
    for pipe in pipes:
        pipe.send("go")
    for _ in wheels:
        rig.verdict()
    verified = time.perf_counter() - start
    receiver_cpu = tree_cpu_s(os.getpid(), rig.receiver.bench_slaves) - cpu
    slave_cpu = sum(pipe.recv() for pipe in pipes)
    for slave in slaves:
        slave.join()
    single = len(wheels) == 1
    return ReceiverTimes(
        to_disk_s=rig.receiver.received_at - start if single else None,
        verified_s=verified, receiver_cpu_s=receiver_cpu,
        receiver_cpu_to_disk_s=rig.receiver.cpu_at_disk - cpu if single else None,
        slave_cpu_s=slave_cpu)


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


# --- the end-to-end run ---------------------------------------------------------------------


def farm_runs(args: argparse.Namespace, link: Link, work: Path, keys: Optional[Keys],
              buffer: memoryview) -> list[tuple[FarmTimes, float, float]]:
    """(times, piw-master's CPU seconds from BUILT to listed, the plain copy's seconds)
    for each round, after one round not counted (the master's first transfer)."""
    size = args.size_mb * MB
    rounds = []
    with running_master(work, link.master_host, args.rounds + 1, args.chunk_size,
                        args.window, keys.master_args() if keys else []) as master:
        (work / "slave").mkdir()
        ours, theirs = multiprocessing.Pipe()
        slave = multiprocessing.Process(target=farm_slave, args=(
            link, master, keys.client() if keys else None, work / "slave", size, theirs))
        slave.start()
        try:
            for n in range(args.rounds + 1):
                ours.send("go")
                ours.recv()
                cpu = tree_cpu_s(master.pid)
                ours.send("start")
                times = ours.recv()
                master_cpu = tree_cpu_s(master.pid) - cpu
                copy_s, _ = memory_copy_run(link, times.size, buffer)
                if n:
                    rounds.append((times, master_cpu, copy_s))
            ours.send("stop")
        finally:
            slave.join(30)
            if slave.is_alive():
                slave.kill()
    return rounds


# --- report --------------------------------------------------------------------------------


def rate(size_mb: float, seconds: list[float]) -> str:
    return f"{size_mb / min(seconds):.0f} MB/s (median {size_mb / statistics.median(seconds):.0f})"


def share(plain_s: list[float], seconds: list[float]) -> str:
    return f"{min(plain_s) / min(seconds):.0%} (median {statistics.median(plain_s) / statistics.median(seconds):.0%})"


def per_mb(cpu_s: list[float], size_mb: float) -> str:
    return (f"{min(cpu_s) * 1000 / size_mb:.2f} ms per MB "
            f"(median {statistics.median(cpu_s) * 1000 / size_mb:.2f})")


def load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=OPTIONS["chunk_size"].default,
                        help="(default: the master's)")
    parser.add_argument("--window", type=int, default=OPTIONS["transfer_window"].default,
                        help="(default: the master's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slaves", type=int, default=10,
                        help="slaves sending at once in the concurrent run (0: none)")
    parser.add_argument("--slave-size-mb", type=int, default=20,
                        help="the size of each of their wheels")
    parser.add_argument("--no-farm", action="store_true",
                        help="leave out the end-to-end run through piw-master")
    parser.add_argument("--link-mbit", type=int, default=None,
                        help="cross a link shaped to this many Mbit/s, not loopback (root only)")
    parser.add_argument("--curve", action="store_true",
                        help="encrypt the sockets with CURVE keys, as a farm with keys does")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        link = Link() if args.link_mbit is None else stack.enter_context(
            shaped_link(args.link_mbit))
        run(args, link)


def run(args: argparse.Namespace, link: Link) -> None:
    where = "loopback" if args.link_mbit is None else f"a {args.link_mbit} Mbit/s link"
    print(f"chunk {args.chunk_size} B, window {args.window}, {args.rounds} rounds over "
          f"{where}{' with CURVE' if args.curve else ''} (best and median); "
          f"load average {load()}")
    size_mb = args.size_mb
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keys = Keys.make(work / "keys") if args.curve else None
        buffer = memoryview(bytearray(max(args.size_mb, args.slave_size_mb) * MB + MB))
        if not args.no_farm:
            (work / "farm").mkdir()
            report_farm(args, farm_runs(args, link, work / "farm", keys, buffer))
        wheel = make_wheel(work, args.size_mb * MB)
        size_mb = wheel.stat().st_size / MB
        single, plain, checks = [], [], []
        with receiver_rig(link, work, args.chunk_size, args.window, keys) as rig:
            receiver_run(rig, link, [wheel])  # not counted: the first transfer
            for _ in range(args.rounds):
                single.append(receiver_run(rig, link, [wheel]))
                plain.append(memory_copy_run(link, wheel.stat().st_size, buffer))
                checks.append(integrity_only(wheel, args.chunk_size))
            report_receiver(args, size_mb, single, plain, checks)
            if args.slaves:
                concurrent_runs(args, link, work, rig)
    print(f"load average {load()}")


def report_farm(args: argparse.Namespace, rounds: list[tuple[FarmTimes, float, float]]) -> None:
    size_mb = rounds[0][0].size / MB
    plain = [copy_s for _, _, copy_s in rounds]
    print(f"\nend to end through piw-master, a {size_mb:.1f} MB wheel from BUILT to:")
    for label, attr in (("verified (RECEIVED at the slave)", "verified_s"),
                        ("recorded and at its URL under simple/", "in_place_s"),
                        ("listed on its simple page", "listed_s")):
        seconds = [getattr(times, attr) for times, _, _ in rounds]
        print(f"  {label + ':':40} {rate(size_mb, seconds)}, {share(plain, seconds)} of "
              f"the plain copy")
    print(f"  {'plain memory-to-memory TCP copy:':40} {rate(size_mb, plain)}")
    print(f"  piw-master's CPU, BUILT to listed (all its threads and processes): "
          f"{per_mb([cpu for _, cpu, _ in rounds], size_mb)}")


def report_receiver(args: argparse.Namespace, size_mb: float, single: list[ReceiverTimes],
                    plain: list[tuple[float, float]], checks: list[float]) -> None:
    copy = [t for t, _ in plain]
    print(f"\nthe file receiver alone, a {size_mb:.1f} MB wheel from OFFER to:")
    print(f"  {'the last chunk on disk:':40} {rate(size_mb, [r.to_disk_s for r in single])}, "
          f"{share(copy, [r.to_disk_s for r in single])} of the plain copy")
    print(f"  {'VERIFIED (hash, zip, RECORD):':40} {rate(size_mb, [r.verified_s for r in single])}, "
          f"{share(copy, [r.verified_s for r in single])} of the plain copy")
    print(f"  {'plain memory-to-memory TCP copy:':40} {rate(size_mb, copy)}")
    print(f"  the receiver's CPU with full verification: "
          f"{per_mb([r.receiver_cpu_s for r in single], size_mb)}; to the last chunk on "
          f"disk {per_mb([r.receiver_cpu_to_disk_s for r in single], size_mb)}")
    both = [r.receiver_cpu_s + r.slave_cpu_s for r in single]
    print(f"  CPU of both ends (least): {min(both) * 1000:.0f} ms; the plain copy's "
          f"{min(cpu for _, cpu in plain) * 1000:.0f} ms; the checks alone "
          f"{min(checks) * 1000:.0f} ms")
    if args.link_mbit is None:
        # both ends share this machine's cores: their CPU bounds the wall time from below
        cores = os.cpu_count() or 1
        floor_s = min(both) / cores
        print(f"  on {cores} cores that CPU takes {floor_s * 1000:.0f} ms at the very least: "
              f"at most {size_mb / floor_s:.0f} MB/s, {min(copy) / floor_s:.0%} of the plain copy")


def concurrent_runs(args: argparse.Namespace, link: Link, work: Path, rig: ReceiverRig) -> None:
    """One wheel of --slave-size-mb alone, then --slaves of them at once, round by round."""
    many = work / "many"
    many.mkdir()
    blob = os.urandom(args.slave_size_mb * MB)
    wheels = [make_wheel(many, len(blob), name=f"bench-blob-{n}", blob=blob)
              for n in range(1, args.slaves + 1)]
    total_mb = sum(w.stat().st_size for w in wheels) / MB
    processes = min(2, args.slaves)
    alone, together = [], []
    for _ in range(args.rounds):
        alone.append(receiver_run(rig, link, wheels[:1]))
        together.append(receiver_run(rig, link, wheels, processes))
    one_mb = wheels[0].stat().st_size / MB
    print(f"\n{args.slaves} slaves sending {one_mb:.1f} MB wheels at once to the receiver "
          f"(the slaves in {processes} processes):")
    print(f"  {'aggregate, OFFERs to the last VERIFIED:':40} "
          f"{rate(total_mb, [r.verified_s for r in together])}")
    print(f"  {'one such wheel alone:':40} {rate(one_mb, [r.verified_s for r in alone])}")
    print(f"  the receiver's CPU: {per_mb([r.receiver_cpu_s for r in together], total_mb)} "
          f"at once; {per_mb([r.receiver_cpu_s for r in alone], one_mb)} alone")


if __name__ == "__main__":
    main()
