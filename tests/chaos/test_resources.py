"""A real piw-master against peers that try to exhaust it: it stays bounded and serving.

Oversized frames, floods of idle TCP connections, wheels larger than the
free space, a disk that fills up mid-transfer, a sender that trickles, and a
zip bomb.  Each is sent at a real master's sockets (plain TCP, raw ZeroMQ, or
a hand-driven slave that speaks the real protocol), and each must leave the
master running, its memory and descriptors bounded, nothing half-written on
disk, and a reason in its log.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import pytest
import zmq
from farm import BIN, HOST_PLATFORM, builds_of, pyenv_python
from raw_slave import STATS, RawSlave
from wheel_craft import craft_wheel

from piwheels.protocols import (
    CONTROL, MAX_SLAVE_FRAME_BYTES, SLAVE,
)
from piwheels.transport import Socket

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def part_files(farm) -> list[Path]:
    transfers = farm.output / ".transfers"
    return sorted(transfers.glob("*.part")) if transfers.exists() else []


def assert_master_healthy(farm) -> None:
    assert farm.master.proc.poll() is None, farm.master.log()[-3000:]
    log = farm.master.log()
    assert "Traceback" not in log and "task failed" not in log, log[-3000:]
    assert "Too many open files" not in log
    assert farm.snapshot()["master"]


@contextlib.contextmanager
def raw_zmq() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def random_wheel(directory: Path, package: str, size: int) -> Path:
    module = package.replace("-", "_")
    return craft_wheel(directory, filename=f"{module}-1.0-py3-none-any.whl", name=package,
                       files={f"{module}/data.bin": os.urandom(size)})


# --- frames too large ------------------------------------------------------------


def test_oversized_frames_are_cut_off_and_the_master_memory_stays_flat(farm):
    farm.start_master()
    pid = farm.master.proc.pid
    with raw_zmq() as ctx:
        # a frame that fits the slave protocol's limit is read, and refused by its schema
        peer = Socket.make(ctx, zmq.DEALER, SLAVE, curve_client=farm.curve_client("big"))
        peer.connect(f"tcp://127.0.0.1:{farm.slave_port}")
        peer.zsocket.send(b"\x00" * MAX_SLAVE_FRAME_BYTES)
        assert peer.zsocket.poll(10_000), "the master did not answer a frame at the limit"
        assert peer.recv()[0] == "DIE"
        peer.close()
        time.sleep(1)
        before = rss_bytes(pid)
        # one byte over it, and 64 MB frames: ZeroMQ disconnects the peer unread
        frames = [(farm.slave_port, MAX_SLAVE_FRAME_BYTES + 1)]
        frames += [(port, 64 * MiB) for port in (farm.slave_port, farm.file_port) for _ in range(4)]
        for port, size in frames:
            sender = farm.secure(ctx.socket(zmq.DEALER), "big")
            monitor = sender.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            sender.connect(f"tcp://127.0.0.1:{port}")
            sender.send(b"\x01" * size)
            assert monitor.poll(10_000), f"a {size}-byte frame to port {port} was not cut off"
            sender.disable_monitor()
            monitor.close(linger=0)
            sender.close(linger=0)
        # the control socket takes admin requests only: a large one is cut off too
        tool = ctx.socket(zmq.DEALER)
        monitor = tool.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        tool.connect(farm.control_address)
        tool.send(b"\x02" * (CONTROL.max_frame[0] + 1))
        assert monitor.poll(10_000), "a large frame to the control socket was not cut off"
        tool.disable_monitor()
        monitor.close(linger=0)
        tool.close(linger=0)
    time.sleep(1)
    grown = rss_bytes(pid) - before
    # 10 frames of up to 64 MB were sent: the master kept none of them
    assert grown < 32 * MiB, f"the master grew by {grown // MiB} MiB"
    assert "bytes is over the limit" not in farm.master.log()  # cut off before decoding
    assert_master_healthy(farm)


def test_a_peer_that_floods_without_reading_holds_little_of_the_master(farm):
    """Queues per peer are short: a flood waits in TCP, not in the master's memory,
    and replies it never reads are dropped, not kept."""
    farm.start_master()
    pid = farm.master.proc.pid
    frames, frame_bytes = 250, 4 * MiB
    with raw_zmq() as ctx:
        flooder = farm.secure(ctx.socket(zmq.DEALER), "flooder")
        flooder.connect(f"tcp://127.0.0.1:{farm.slave_port}")
        time.sleep(0.5)
        before = rss_bytes(pid)
        peak = before
        garbage = b"\x00" * frame_bytes
        sent = 0
        while sent < frames:
            try:
                flooder.send(garbage, zmq.NOBLOCK, copy=False)
                sent += 1
            except zmq.Again:
                time.sleep(0.005)
            if sent % 10 == 0:
                peak = max(peak, rss_bytes(pid))
        # a slave on another connection is still served during the flood
        honest = RawSlave(ctx, farm, label="honest")
        honest.hello()
        for _ in range(100):
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)
        honest.close()
    # 1 GB went past; the master held at most a few frames of it at a time
    assert peak - before < 24 * frame_bytes, f"the master grew by {(peak - before) // MiB} MiB"
    assert "dropped a bad message" in farm.master.log()
    assert_master_healthy(farm)


# --- idle connections --------------------------------------------------------------


@contextlib.contextmanager
def soft_fd_limit(limit: int) -> Iterator[None]:
    """Start children under a soft open-file limit of *limit* (a systemd default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= limit:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


#: connections the flood opens before it waits for the master to accept them: under
#: ZeroMQ's listen backlog (100), which, when full, drops a SYN and stalls that
#: connect for a second (three stalls and the first connections met the handshake
#: timeout before the last were open)
FLOOD_BATCH = 50
#: seconds the flood waits for the master to accept a batch (it may be closing
#: expired connections meanwhile, so its count need not grow by the whole batch)
FLOOD_BATCH_WAIT_S = 0.5


class IdleFlood:
    """Up to *count* idle TCP connections to the given loopback ports of the master
    *pid*, kept open."""

    def __init__(self, ports: list[int], count: int, pid: int) -> None:
        self.ports = ports
        self.count = count
        self.pid = pid
        self.socks: list[socket.socket] = []
        self.reopened = 0

    def top_up(self) -> None:
        """Replace the connections the master closed, and open the missing ones."""
        alive = []
        for sock in self.socks:
            try:
                if sock.recv(4096, socket.MSG_DONTWAIT) == b"":
                    sock.close()  # the master closed it
                    self.reopened += 1
                    continue
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                self.reopened += 1
                continue
            alive.append(sock)
        self.socks = alive
        while len(self.socks) < self.count:
            before = open_fds(self.pid)
            batch = min(FLOOD_BATCH, self.count - len(self.socks))
            for _ in range(batch):
                port = self.ports[len(self.socks) % len(self.ports)]
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.setblocking(False)
                self.socks.append(sock)
            deadline = time.monotonic() + FLOOD_BATCH_WAIT_S
            while open_fds(self.pid) < before + batch and time.monotonic() < deadline:
                time.sleep(0.005)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []


def test_idle_connections_neither_exhaust_descriptors_nor_stop_builds(farm, db, release):
    release("through-the-crowd", kind="pure")
    with soft_fd_limit(1024):
        farm.start_master("--handshake-timeout", "3")
    pid = farm.master.proc.pid
    assert "open-file limit raised from 1024 to" in farm.master.log()
    baseline = open_fds(pid)
    flood = IdleFlood([farm.slave_port, farm.file_port], 1200, pid)
    try:
        flood.top_up()
        time.sleep(0.5)
        assert open_fds(pid) > baseline + 1000  # the master did accept them all
        slave = farm.start_slave("crowded", pyenv_python("11"))
        # keep 1,200 idle connections open (replacing the ones the master expires)
        # while the build runs, its wheel is sent and published
        deadline = time.monotonic() + 120
        while not builds_of(db, "through-the-crowd"):
            assert time.monotonic() < deadline, slave.log()[-2000:]
            assert farm.master.proc.poll() is None, farm.master.log()[-3000:]
            flood.top_up()
            time.sleep(0.3)
        (build,) = builds_of(db, "through-the-crowd")
        assert build.status == "success", build
        assert flood.reopened > 0  # idle connections were expired by the handshake timeout
        wheel = farm.output / "simple" / "through-the-crowd" / build.files[0].filename
        farm.wait(wheel.exists, 10, "the wheel to be published")
        # without topping up, every idle connection is gone within the handshake timeout
        farm.wait(lambda: open_fds(pid) < baseline + 50, 15, "idle connections expired")
    finally:
        flood.close()
    assert_master_healthy(farm)
    log = farm.master.log()
    assert "EMFILE" not in log


# --- disk space ------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_wheel_larger_than_the_free_space_waits_for_room(farm, db, release):
    release("roomy", kind="pure", data_bytes=6 * MiB)
    with small_tmpfs(farm.output, "4m"):
        farm.start_master()
        slave = farm.start_slave("hopeful", pyenv_python("11"))
        farm.master.wait_log("refused (to be built again) roomy-1.0", 120)
        log = farm.master.log()
        assert "no room:" in log and "declared" in log
        assert "holding new builds: no disk space for a transfer" in log
        assert builds_of(db, "roomy") == []  # not recorded as a failure: queued again
        assert part_files(farm) == []
        assert_master_healthy(farm)
        # room comes back: the build is handed out again and published
        subprocess.run(["mount", "-o", "remount,size=64m", str(farm.output)], check=True)
        farm.wait(lambda: builds_of(db, "roomy"), 120, "the build once there is room")
        (build,) = builds_of(db, "roomy")
        assert build.status == "success", build
        assert (farm.output / "simple" / "roomy" / build.files[0].filename).exists()
        assert "releasing the hold on new builds" in farm.master.log()
        assert slave.log().count("building roomy 1.0") == 2
        assert part_files(farm) == []
        assert_master_healthy(farm)
        farm.stop()


def test_a_disk_that_fills_up_mid_transfer_fails_only_that_transfer(farm, db, release, tmp_path):
    release("crowded-out", kind="pure")
    wheel = random_wheel(tmp_path, "crowded-out", 2 * MiB)
    with small_tmpfs(farm.output, "6m"):
        farm.start_master("--chunk-size", "65536")
        filler = farm.output / "filler"

        def fill_the_disk() -> None:
            free = shutil.disk_usage(farm.output).free
            with open(filler, "wb") as f:
                f.write(b"\0" * (free - 64 * 1024))

        with raw_zmq() as ctx:
            raw = RawSlave(ctx, farm)
            raw.hello()
            raw.wait_build("crowded-out")
            raw.built(wheel)
            ok, reason = raw.send_file(wheel, before_first=fill_the_disk)
            assert not ok and "cannot store it: No space left on device" in reason
            assert raw.sent(wheel)[0] == "DONE"
            assert part_files(farm) == []
            assert builds_of(db, "crowded-out") == []
            assert_master_healthy(farm)
            # held while the disk is full; handed out again once there is room
            name, _ = raw.request("IDLE", {"stats": STATS})
            assert name == "SLEEP"
            filler.unlink()
            raw.wait_build("crowded-out")
            raw.built(wheel)
            assert raw.send_file(wheel) == (True, None)
            assert raw.sent(wheel)[0] == "DONE"
            raw.close()
        farm.wait(lambda: builds_of(db, "crowded-out"), 20, "the build to be recorded")
        assert (farm.output / "simple" / "crowded-out" / wheel.name).exists()
        assert_master_healthy(farm)
        farm.stop()


# --- a sender that trickles ------------------------------------------------------------


def test_a_trickling_sender_is_cut_off_at_the_transfer_deadline(farm, db, release, tmp_path):
    release("dribble", kind="pure")
    wheel = random_wheel(tmp_path, "dribble", 2 * MiB)
    farm.start_master("--chunk-size", "65536", "--transfer-deadline", "3")
    with raw_zmq() as ctx:
        raw = RawSlave(ctx, farm)
        raw.hello()
        raw.wait_build("dribble")
        raw.built(wheel)
        started = time.monotonic()
        ok, reason = raw.send_file(wheel, trickle_s=0.3)
        took = time.monotonic() - started
        assert not ok and "deadline of 3 s" in reason, reason
        assert 2.5 < took < 8, took
        assert raw.sent(wheel)[0] == "DONE"
        assert part_files(farm) == []
        assert builds_of(db, "dribble") == []
        # queued again, not recorded: a prompt sender gets it done
        raw.wait_build("dribble")
        raw.built(wheel)
        assert raw.send_file(wheel) == (True, None)
        raw.sent(wheel)
        raw.close()
    farm.wait(lambda: builds_of(db, "dribble"), 20, "the build to be recorded")
    assert builds_of(db, "dribble")[0].status == "success"
    assert_master_healthy(farm)


# --- a zip bomb ------------------------------------------------------------------------


def zip_bomb(directory: Path, package: str, unpacked_gib: int = 3) -> Path:
    """A wheel whose one data member unpacks to *unpacked_gib* GiB of zeros from ~3 MB.

    Deflate of zeros after a full flush is the same bytes each time, so the
    member is written from one compressed piece instead of compressing GiBs.
    """
    module = package.replace("-", "_")
    piece_size = 16 * MiB
    pieces = unpacked_gib * 1024 * MiB // piece_size
    zeros = bytes(piece_size)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush()
    crc = 0
    for _ in range(pieces):
        crc = zlib.crc32(zeros, crc)
    unpacked = pieces * piece_size
    # the honest members, then the bomb appended by hand
    path = craft_wheel(directory, filename=f"{module}-1.0-py3-none-any.whl", name=package,
                       compression=zipfile.ZIP_DEFLATED,
                       record_extra=f"{module}/zeros.bin,,{unpacked}\n")
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info.filename)) for info in z.infolist()]
    name = f"{module}/zeros.bin".encode()
    compressed = len(piece) * pieces + len(tail)
    with open(path, "wb") as out:
        directory_entries = []
        for info, data in members:
            offset = out.tell()
            raw = zlib.compressobj(9, zlib.DEFLATED, -15)
            body = raw.compress(data) + raw.flush()
            fname = info.filename.encode()
            out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0,
                                  zlib.crc32(data), len(body), len(data), len(fname), 0))
            out.write(fname + body)
            directory_entries.append((fname, zlib.crc32(data), len(body), len(data), offset))
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0,
                              crc, compressed, unpacked, len(name), 0))
        out.write(name)
        for _ in range(pieces):
            out.write(piece)
        out.write(tail)
        directory_entries.append((name, crc, compressed, unpacked, offset))
        start = out.tell()
        for fname, crc32, csize, usize, local in directory_entries:
            out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0,
                                  crc32, csize, usize, len(fname), 0, 0, 0, 0, 0, local))
            out.write(fname)
        end = out.tell()
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(directory_entries),
                              len(directory_entries), end - start, start, 0))
    return path


def test_a_zip_bomb_is_rejected_and_never_published(farm, db, release, tmp_path):
    release("kaboom", kind="pure")
    bomb = zip_bomb(tmp_path, "kaboom")
    assert bomb.stat().st_size < 4 * MiB
    with zipfile.ZipFile(bomb) as z:
        assert sum(info.file_size for info in z.infolist()) > 3 * 1024 * MiB
    farm.start_master()
    pid = farm.master.proc.pid
    before = rss_bytes(pid)
    with raw_zmq() as ctx:
        raw = RawSlave(ctx, farm)
        raw.hello()
        raw.wait_build("kaboom")
        raw.built(bomb)
        started = time.monotonic()
        ok, reason = raw.send_file(bomb)
        assert not ok and "times its compressed size, over the limit of 100" in reason, reason
        assert time.monotonic() - started < 10  # refused by its directory, not by unpacking
        assert raw.sent(bomb)[0] == "DONE"
        raw.close()
    farm.wait(lambda: builds_of(db, "kaboom"), 20, "the rejection to be recorded")
    (build,) = builds_of(db, "kaboom")
    assert build.status == "rejected" and "compressed size" in (build.reason or "")
    assert not (farm.output / "simple" / "kaboom" / bomb.name).exists()
    assert part_files(farm) == []
    assert not any((farm.output / ".transfers").glob("*.whl"))
    assert rss_bytes(pid) - before < 64 * MiB
    assert_master_healthy(farm)



def test_piw_import_of_a_zip_bomb_is_one_line_of_refusal(farm, tmp_path):
    bomb = zip_bomb(tmp_path, "kaboom-import", unpacked_gib=1)
    farm.start_master()
    result = subprocess.run(
        [str(BIN / "piw-import"), "--control-address", farm.control_address, "--abi", "cp311",
         "--platform", HOST_PLATFORM, str(bomb)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "times its compressed size" in line, line
    assert not (farm.output / "simple" / "kaboom-import").exists()
    transfers = farm.output / ".transfers"
    assert not transfers.exists() or not any(transfers.iterdir())  # the staged copy is gone
    assert_master_healthy(farm)
