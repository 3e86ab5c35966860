"""file_receiver against the real slave-side FileSender and against misbehaving peers.

Every test runs the task in its thread on real ZeroMQ sockets (TCP for the
file protocol, inproc for the slave driver's side, which the test plays).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import msgpack
import pytest
import zmq
from farm import free_port, recv, task_failure, wait_for
from wheel_craft import FALSE_CLAIMS, craft_wheel

from piwheels.master.file_receiver import FileReceiver
from piwheels.protocols import FILE_TRANSFER, SUPERVISOR, TRANSFER_REQUESTS, TRANSFER_RESULTS
from piwheels.slave.file_sender import FileSender
from piwheels.transport import Socket
from piwheels.wheel_facts import UnpackLimits, inspect_wheel

CHUNK = 16 * 1024


def big_wheel(directory: Path, name: str = "piw-craft", size: int = 300_000) -> Path:
    """A valid wheel of about *size* bytes (random data does not compress)."""
    return craft_wheel(directory, f"{name.replace('-', '_')}-1.0-py3-none-any.whl", name=name,
                       files={"piw_craft/blob.bin": os.urandom(size),
                              "piw_craft/__init__.py": b""})


class Rig:
    """A running FileReceiver plus the sockets the test drives it through."""

    def __init__(self, tmp_path: Path, **options) -> None:
        self.ctx = zmq.Context()
        self.transfers = tmp_path / "output" / ".transfers"
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.results = Socket.make(self.ctx, zmq.PULL, TRANSFER_RESULTS.reverse())
        self.results.bind(TRANSFER_RESULTS.address)
        settings = dict(chunk_size=CHUNK, window=4, timeout_s=0.3, retries=2,
                        max_wheel_size=10 * 1024 * 1024, deadline_s=30.0,
                        unpack_limits=UnpackLimits(max_unpacked=40 * 1024 * 1024,
                                                   max_ratio=100))
        settings.update(options)
        self.task = FileReceiver(self.ctx, file_bind=self.address,
                                 output_path=self.transfers.parent, **settings)
        self.requests = Socket.make(self.ctx, zmq.PUSH, TRANSFER_REQUESTS)
        self.requests.connect(TRANSFER_REQUESTS.address)
        self.task.start()

    def expect(self, path: Path, slave_id: int = 1, claimed: Optional[dict] = None,
               **overrides) -> dict:
        """EXPECT *path* as the slave driver does after BUILT; the facts claimed
        (the file's own, but for *claimed*)."""
        facts = {**inspect_wheel(path, find_apt_deps=False).to_dict(), **(claimed or {})}
        expect = {"slave_id": slave_id, "package": "piw-craft", "version": "1.0",
                  "builder_abi": "cp311", "builder_platform": "linux_x86_64",
                  "builder_platforms": ["linux_x86_64", "manylinux_2_17_x86_64"],
                  "key_id": None,
                  "claimed": facts, **overrides}
        self.requests.send("EXPECT", expect)
        return facts

    def result(self, timeout_s: float = 10) -> tuple[str, dict]:
        return recv(self.results, timeout_s)

    def no_result(self, wait_s: float = 0.5) -> bool:
        return not self.results.zsocket.poll(int(wait_s * 1000))

    def dealer(self) -> Socket:
        sock = Socket.make(self.ctx, zmq.DEALER, FILE_TRANSFER)
        sock.connect(self.address)
        return sock

    def close(self) -> None:
        self.task._quit = True
        self.task.join(5)
        assert not self.task.is_alive()
        failed = task_failure(self.supervisor)
        for sock in (self.supervisor, self.results, self.requests):
            sock.close()
        self.ctx.destroy(linger=0)  # also closes what a failed test left open
        assert not failed, f"the task reported a failure: {failed}"


@pytest.fixture
def rig(tmp_path):
    rigs = []

    def make(**options) -> Rig:
        rigs.append(Rig(tmp_path, **options))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def chunk_of(data: bytes, fetch: dict, *, damage: bool = False) -> dict:
    piece = data[fetch["offset"]:fetch["offset"] + fetch["length"]]
    crc = zlib.crc32(piece)
    if damage:
        piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
    return {"filename": fetch["filename"], "offset": fetch["offset"], "data": piece, "crc32": crc}


def serve_with_sender(rig_: Rig, path: Path, slave_id: int = 1):
    """Offer *path* with the slave's real FileSender; the verdict it gets."""
    sender = FileSender(rig_.ctx, rig_.address)
    try:
        time.sleep(0.05)
        facts = rig_.expect(path, slave_id)
        sender.offer(slave_id, path, facts["size"], facts["sha256"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sender.socket.zsocket.poll(100):
                outcome = sender.handle()
                if outcome is not None:
                    return outcome, sender.chunks_sent
        raise AssertionError("the transfer never finished")
    finally:
        sender.close()


def test_a_wheel_arrives_whole_and_verified(rig, tmp_path):
    r = rig()
    path = big_wheel(tmp_path)
    (ok, reason), chunks = serve_with_sender(r, path)
    assert (ok, reason) == (True, None)
    assert chunks == -(-path.stat().st_size // CHUNK)
    name, verified = r.result()
    assert name == "VERIFIED" and verified["file"]["filename"] == path.name
    received = Path(verified["file"]["path"])
    assert received.parent == r.transfers and not received.name.endswith(".part")
    assert received.read_bytes() == path.read_bytes()
    assert not list(r.transfers.glob("*.part"))


def test_a_damaged_chunk_is_fetched_again(rig, tmp_path):
    r = rig(window=1)
    path = big_wheel(tmp_path, size=40_000)
    data = path.read_bytes()
    facts = r.expect(path)
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 1, "filename": path.name, "size": facts["size"],
                         "sha256": facts["sha256"]})
    fetches = []
    damaged_once = False
    while True:
        name, fetch = recv(slave)
        if name == "RECEIVED":
            break
        fetches.append(fetch["offset"])
        damage = fetch["offset"] == CHUNK and not damaged_once
        damaged_once = damaged_once or damage
        slave.send("CHUNK", chunk_of(data, fetch, damage=damage))
    assert fetch["ok"], fetch["reason"]
    assert fetches.count(CHUNK) == 2 and fetches.count(0) == 1
    assert r.result()[0] == "VERIFIED"
    assert r.task.status()["chunks_refetched"] == 1
    slave.close()


def test_an_unexpected_offer_is_refused_and_nothing_is_written(rig, tmp_path):
    r = rig()
    path = big_wheel(tmp_path, size=1000)
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 7, "filename": path.name, "size": path.stat().st_size,
                         "sha256": "0" * 64})
    name, verdict = recv(slave)
    assert (name, verdict["ok"], verdict["reason"]) == ("RECEIVED", False, "not expected")
    assert r.no_result()
    assert not any(r.transfers.iterdir())
    slave.close()


def test_an_offer_sent_straight_after_its_expect_is_never_refused(rig, tmp_path):
    """EXPECT (inproc) and OFFER (TCP) travel apart; the EXPECT must still win.

    Each file is over the size limit, so the receiver answers at once with that
    reason, which it can only give once it has found the EXPECT.
    """
    r = rig(max_wheel_size=10)
    path = big_wheel(tmp_path, size=1000)
    slave = r.dealer()
    reasons = set()
    for slave_id in range(1, 301):
        facts = r.expect(path, slave_id)
        slave.send("OFFER", {"slave_id": slave_id, "filename": path.name,
                             "size": facts["size"], "sha256": facts["sha256"]})
        reasons.add(recv(slave)[1]["reason"])
    assert reasons == {f"{path.stat().st_size} bytes is over the limit of 10"}
    slave.close()


def test_garbage_is_dropped_and_the_receiver_carries_on(rig, tmp_path):
    r = rig()
    raw = r.ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(r.address)
    raw.send(os.urandom(64))
    raw.send_multipart([b"one", b"two", b"three"])
    raw.send(msgpack.packb(["FETCH", {"filename": "x", "offset": 0, "length": 1}]))
    raw.send(msgpack.packb(["CHUNK", {"filename": "x", "offset": -1}]))
    raw.send(msgpack.packb(["CHUNK", {"filename": "x.whl", "offset": 0, "data": b"zz",
                                      "crc32": zlib.crc32(b"zz")}]))
    raw.send(msgpack.packb({"not": "a pair"}))
    raw.close()
    path = big_wheel(tmp_path, size=50_000)
    (ok, reason), _ = serve_with_sender(r, path)
    assert ok, reason
    assert r.result()[0] == "VERIFIED"


def test_a_silent_slave_times_out_and_the_part_file_goes(rig, tmp_path):
    r = rig(timeout_s=0.2, retries=2)
    path = big_wheel(tmp_path, size=50_000)
    facts = r.expect(path)
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 1, "filename": path.name, "size": facts["size"],
                         "sha256": facts["sha256"]})
    assert recv(slave)[0] == "FETCH"
    wait_for(lambda: list(r.transfers.glob("*.part")), 5, "the part file")
    name, rejected = r.result()
    assert name == "REJECTED" and "timed out" in rejected["reason"]
    assert not list(r.transfers.glob("*.part"))
    slave.close()


def test_wrong_content_is_fetched_again_then_rejected(rig, tmp_path):
    r = rig(retries=1, window=8)
    path = big_wheel(tmp_path, size=30_000)
    facts = r.expect(path)
    impostor = os.urandom(facts["size"])  # right size, right CRCs, wrong file
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 1, "filename": path.name, "size": facts["size"],
                         "sha256": facts["sha256"]})
    first_chunk_fetches = 0
    while True:
        name, msg = recv(slave)
        if name == "RECEIVED":
            break
        first_chunk_fetches += msg["offset"] == 0
        slave.send("CHUNK", chunk_of(impostor, msg))
    assert not msg["ok"] and "SHA-256" in msg["reason"]
    assert first_chunk_fetches == 2  # the whole file was fetched a second time
    name, rejected = r.result()
    assert name == "REJECTED" and "SHA-256" in rejected["reason"]
    assert not any(r.transfers.iterdir())
    slave.close()


def test_a_file_the_slave_cannot_serve_is_rejected(rig, tmp_path):
    r = rig()
    path = big_wheel(tmp_path, size=5000)
    facts = r.expect(path)
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 1, "filename": path.name, "size": facts["size"],
                         "sha256": facts["sha256"]})
    recv(slave)
    slave.send("MISSING", {"filename": path.name, "reason": "disk on fire"})
    name, rejected = r.result()
    assert name == "REJECTED" and "disk on fire" in rejected["reason"]
    slave.close()


def test_a_wheel_of_the_wrong_release_is_rejected_with_a_reason(rig, tmp_path):
    r = rig()
    path = big_wheel(tmp_path, name="other-thing", size=5000)
    r.expect(path, package="piw-craft")
    sender = FileSender(r.ctx, r.address)
    data = path.read_bytes()
    sender.offer(1, path, len(data), hashlib.sha256(data).hexdigest())
    outcome = None
    deadline = time.monotonic() + 10
    while outcome is None and time.monotonic() < deadline:
        if sender.socket.zsocket.poll(100):
            outcome = sender.handle()
    sender.close()
    assert outcome is not None and outcome[0] is False
    name, rejected = r.result()
    assert name == "REJECTED" and rejected["reason"] == outcome[1]
    assert "piw-craft" in rejected["reason"] or "other" in rejected["reason"]


def test_a_wheel_for_a_platform_the_builder_accepts_is_verified_and_any_other_rejected(
        rig, tmp_path):
    """The receiver checks the wheel's tags against every platform the slave's
    interpreter accepts (EXPECT's builder_platforms), not just its own."""
    r = rig()
    accepted = craft_wheel(tmp_path, "piw_craft-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    (ok, reason), _ = serve_with_sender(r, accepted)
    assert (ok, reason) == (True, None)
    name, verified = r.result()
    assert name == "VERIFIED" and verified["file"]["filename"] == accepted.name

    (tmp_path / "foreign").mkdir()
    foreign = craft_wheel(tmp_path / "foreign", "piw_craft-1.0-cp311-cp311-linux_aarch64.whl")
    (ok, reason), _ = serve_with_sender(r, foreign, slave_id=2)
    assert ok is False
    name, rejected = r.result()
    assert name == "REJECTED" and rejected["reason"] == reason and not rejected["retry"]
    assert reason == (f"{foreign.name} has tag cp311-cp311-linux_aarch64, which a builder "
                      f"for ABI cp311 on linux_x86_64 cannot have made")
    assert not list(r.transfers.glob("*aarch64*"))


def test_abandon_drops_half_done_and_verified_files(rig, tmp_path):
    r = rig(window=1)
    (tmp_path / "earlier").mkdir()
    done = big_wheel(tmp_path / "earlier", size=5000)
    (ok, _), _ = serve_with_sender(r, done, slave_id=3)
    assert ok
    verified = Path(r.result()[1]["file"]["path"])
    assert verified.exists()
    path = big_wheel(tmp_path, size=60_000)
    facts = r.expect(path, slave_id=3)
    slave = r.dealer()
    slave.send("OFFER", {"slave_id": 3, "filename": path.name, "size": facts["size"],
                         "sha256": facts["sha256"]})
    fetch = recv(slave)[1]
    wait_for(lambda: list(r.transfers.glob("*.part")), 5, "the part file")
    r.requests.send("ABANDON", {"slave_id": 3})
    wait_for(lambda: not any(r.transfers.iterdir()), 5, "the transfers directory to empty")
    slave.send("CHUNK", chunk_of(path.read_bytes(), fetch))  # too late: dropped
    assert r.no_result()
    slave.close()


def test_leftovers_of_an_earlier_run_are_wiped_at_start(rig, tmp_path):
    leftovers = tmp_path / "output" / ".transfers"
    leftovers.mkdir(parents=True)
    (leftovers / "1-abc-x-1.0-py3-none-any.whl.part").write_bytes(b"half")
    r = rig()
    wait_for(lambda: r.transfers.is_dir() and not any(r.transfers.iterdir()), 5,
             "the leftovers to go")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_room_still_to_be_written_by_other_transfers_is_not_offered_twice(rig, tmp_path):
    """The .part files are sparse: free space alone would admit both of these."""
    output = tmp_path / "output"
    output.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(output)], check=True)
    try:
        r = rig()
        wheels = []
        for where in ("a", "b"):
            (tmp_path / where).mkdir()
            wheels.append(big_wheel(tmp_path / where, size=2 * 1024 * 1024))
        first, second = wheels
        slow, late = r.dealer(), r.dealer()
        time.sleep(0.05)
        for slave_id, sock, path in ((1, slow, first), (2, late, second)):
            facts = r.expect(path, slave_id)
            sock.send("OFFER", {"slave_id": slave_id, "filename": path.name,
                                "size": facts["size"], "sha256": facts["sha256"]})
            time.sleep(0.2)
        assert recv(slow)[0] == "FETCH"  # the first is under way (and never answered)
        name, received = recv(late)
        assert name == "RECEIVED" and not received["ok"]
        assert received["reason"].startswith("no room:")
        name, rejected = r.result()
        assert (name, rejected["slave_id"], rejected["retry"]) == ("REJECTED", 2, True)
        slow.close()
        late.close()
    finally:
        subprocess.run(["umount", "-l", str(output)], check=False)


@pytest.mark.parametrize("fact", sorted(FALSE_CLAIMS))
def test_a_wheel_unlike_what_built_claimed_is_rejected_naming_the_fact(rig, tmp_path, fact):
    """The slave offers its real file (true size and hash); BUILT said otherwise."""
    r = rig()
    path = big_wheel(tmp_path, size=20_000)
    true = inspect_wheel(path, find_apt_deps=False).to_dict()
    change, words = FALSE_CLAIMS[fact]
    r.expect(path, claimed=change(true))
    sender = FileSender(r.ctx, r.address)
    try:
        time.sleep(0.05)
        sender.offer(1, path, true["size"], true["sha256"])
        outcome = wait_for(lambda: sender.socket.zsocket.poll(100) and sender.handle(), 10,
                           "the verdict")
    finally:
        sender.close()
    ok, told = outcome
    assert not ok and words in told, told  # the slave is told why
    name, rejected = r.result()
    assert name == "REJECTED" and rejected["reason"] == told and not rejected["retry"]
    assert r.no_result(0.2)
    assert not any(r.transfers.iterdir())  # nothing kept to be published
    assert r.task.status()["files_rejected"] == 1


def test_verified_facts_are_computed_from_the_file_but_apt_packages_claimed(rig, tmp_path):
    r = rig()
    path = big_wheel(tmp_path, size=20_000)
    sender = FileSender(r.ctx, r.address)
    try:
        time.sleep(0.05)
        claimed = r.expect(path, claimed={"apt_dependencies": ["libfoo1"]})
        sender.offer(1, path, claimed["size"], claimed["sha256"])
        ok, reason = wait_for(lambda: sender.socket.zsocket.poll(100) and sender.handle(), 10,
                              "the verdict")
    finally:
        sender.close()
    assert ok, reason
    name, verified = r.result()
    assert name == "VERIFIED"
    facts = verified["file"]
    data = path.read_bytes()
    with zipfile.ZipFile(path) as wheel:
        metadata = wheel.read("piw_craft-1.0.dist-info/METADATA")
    # what the test reads from the file itself, not what the receiver was told
    assert facts["metadata"] == metadata
    assert facts["metadata_sha256"] == hashlib.sha256(metadata).hexdigest()
    assert (facts["size"], facts["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (facts["py_tag"], facts["abi_tag"], facts["platform_tag"]) == ("py3", "none", "any")
    assert facts["apt_dependencies"] == ["libfoo1"]  # the builder's word: only it can tell
    assert Path(facts["path"]).read_bytes() == data


# --- hashing as chunks arrive, and the check beside the transfer ---------------------------


def check_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wheel-check-")]


def offer(slave: Socket, facts: dict, slave_id: int = 1) -> None:
    slave.send("OFFER", {"slave_id": slave_id, "filename": facts["filename"],
                         "size": facts["size"], "sha256": facts["sha256"]})


def test_chunks_out_of_order_hash_to_the_files_sha256(rig, tmp_path):
    """The second chunk's first fetch goes unanswered (it is fetched again on its
    timeout) and every window is answered backwards: the chunks past the gap, more
    than a window of them, wait to be hashed (kept, then read back from disk)."""
    r = rig(window=4, timeout_s=0.3, retries=2)
    path = big_wheel(tmp_path, size=12 * CHUNK)
    data = path.read_bytes()
    facts = r.expect(path)
    slave = r.dealer()
    offer(slave, facts)
    fetched, waiting = [], []
    while True:
        if slave.zsocket.poll(50):
            name, msg = slave.recv()
            if name == "RECEIVED":
                break
            fetched.append(msg["offset"])
            if msg["offset"] != CHUNK or fetched.count(CHUNK) > 1:
                waiting.append(msg)
            continue
        for fetch in reversed(waiting):
            slave.send("CHUNK", chunk_of(data, fetch))
        waiting.clear()
    assert msg["ok"], msg["reason"]
    assert fetched.count(CHUNK) == 2 and fetched.count(0) == 1  # the hash was right at once
    assert fetched[0] == len(data) // CHUNK * CHUNK  # the last chunk (the zip's directory) first
    name, verified = r.result()
    assert name == "VERIFIED"
    assert Path(verified["file"]["path"]).read_bytes() == data
    assert verified["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    slave.close()


@pytest.mark.parametrize("damage, words", [("crc32", "damaged 3 times"),
                                           ("content", "SHA-256")])
def test_a_chunk_damaged_every_time_is_rejected_and_nothing_kept(rig, tmp_path, damage, words):
    """A chunk whose CRC-32 never matches, or whose bytes are wrong with a CRC-32
    to match (the check thread may have read them): refused, with the reason."""
    r = rig(retries=2)
    path = big_wheel(tmp_path, size=6 * CHUNK)
    data = path.read_bytes()
    facts = r.expect(path)
    slave = r.dealer()
    offer(slave, facts)
    while True:
        name, fetch = recv(slave)
        if name == "RECEIVED":
            break
        if fetch["offset"] != 2 * CHUNK:
            slave.send("CHUNK", chunk_of(data, fetch))
        elif damage == "crc32":
            slave.send("CHUNK", chunk_of(data, fetch, damage=True))
        else:
            piece = bytearray(data[fetch["offset"]:fetch["offset"] + fetch["length"]])
            piece[100] ^= 0xFF
            slave.send("CHUNK", {**chunk_of(data, fetch), "data": bytes(piece),
                                 "crc32": zlib.crc32(piece)})
    assert not fetch["ok"] and words in fetch["reason"]
    name, rejected = r.result()
    assert name == "REJECTED" and words in rejected["reason"]
    assert r.no_result(0.2)
    wait_for(lambda: not check_threads(), 5, "the check threads to end")
    assert not any(r.transfers.iterdir())
    slave.close()


def test_a_stalled_transfer_and_its_check_hold_up_no_other(rig, tmp_path):
    """Slave 1's wheel is of the wrong release and stops half-way (its check waits
    for bytes); slave 2's arrives whole and is VERIFIED meanwhile; then slave 1's is
    finished and rejected with its own reason."""
    r = rig(window=2, timeout_s=5.0)
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
    bad = big_wheel(tmp_path / "a", name="other-thing", size=8 * CHUNK)
    good = big_wheel(tmp_path / "b", size=8 * CHUNK)
    bad_data = bad.read_bytes()
    facts = r.expect(bad, slave_id=1, package="piw-craft")
    stalled = r.dealer()
    offer(stalled, facts)
    held = []
    for _ in range(4):
        name, fetch = recv(stalled)
        stalled.send("CHUNK", chunk_of(bad_data, fetch))
    while stalled.zsocket.poll(300):
        held.append(stalled.recv()[1])  # asked for, not answered (yet)
    assert held and check_threads()
    (ok, reason), _ = serve_with_sender(r, good, slave_id=2)
    assert (ok, reason) == (True, None)
    name, verified = r.result()
    assert (name, verified["slave_id"]) == ("VERIFIED", 2)
    for fetch in held:
        stalled.send("CHUNK", chunk_of(bad_data, fetch))
    while True:
        name, fetch = recv(stalled)
        if name == "RECEIVED":
            break
        stalled.send("CHUNK", chunk_of(bad_data, fetch))
    assert not fetch["ok"] and "piw-craft" in fetch["reason"]
    name, rejected = r.result()
    assert (name, rejected["slave_id"], rejected["reason"]) == ("REJECTED", 1, fetch["reason"])
    stalled.close()


def test_a_transfer_abandoned_mid_way_leaves_no_file_and_no_check(rig, tmp_path):
    r = rig(window=2)
    path = big_wheel(tmp_path, size=8 * CHUNK)
    data = path.read_bytes()
    facts = r.expect(path, slave_id=4)
    slave = r.dealer()
    offer(slave, facts, slave_id=4)
    for _ in range(3):
        name, fetch = recv(slave)
        slave.send("CHUNK", chunk_of(data, fetch))
    wait_for(lambda: r.task.status()["transfers"] == 1 and check_threads(), 5,
             "the transfer and its check under way")
    r.requests.send("ABANDON", {"slave_id": 4})
    wait_for(lambda: not check_threads(), 5, "the check thread to end")
    wait_for(lambda: not any(r.transfers.iterdir()), 5, "the transfers directory to empty")
    while slave.zsocket.poll(200):
        fetch = slave.recv()[1]
        slave.send("CHUNK", chunk_of(data, fetch))  # too late: dropped
    assert r.no_result()
    assert r.task.status()["transfers"] == r.task.status()["checking"] == 0
    assert not any(r.transfers.iterdir())
    slave.close()
