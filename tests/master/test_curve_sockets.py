"""The slave and file sockets under CURVE, with the master's real ZAP handler.

The slave driver and the file receiver run in their threads on real TCP
sockets, guarded by :class:`~piwheels.master.authenticator.Authenticator`
and a real directory of enrolled keys; the test plays the slaves (each with
its own key pair) and the tasks around the one under test.  Nothing here
needs a database or a build, so every case takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from pathlib import Path

import pytest
import zmq
from farm import free_port, recv, task_failure
from wheel_craft import craft_wheel

from piwheels.keys import load_key_pair, make_key_pair
from piwheels.master.authenticator import Authenticator
from piwheels.master.file_receiver import FileReceiver
from piwheels.master.slave_driver import SlaveDriver
from piwheels.protocols import (
    BUILD_QUEUE, FILE_TRANSFER, PROTOCOL_VERSION, QUEUE_REQUESTS, RECORD_REQUESTS, SLAVE,
    STATUS_REPORTS, SUPERVISOR, TRANSFER_REQUESTS, TRANSFER_RESULTS,
)
from piwheels.transport import CurveClient, CurveServer, Socket
from piwheels.wheel_facts import UnpackLimits, inspect_wheel

STATS = {"load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}
ABI = "cp313"
PLATFORM = "linux_x86_64"


class Keys:
    """A master key pair, an enrolled-keys directory, and slaves' pairs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.master, _ = make_key_pair(root / "master.key_secret")
        self.enrolled = root / "authorized"
        self.enrolled.mkdir()

    def server(self) -> CurveServer:
        return CurveServer(keys=self.master, enrolled_dir=str(self.enrolled))

    def client(self, name: str, *, enrol: bool = True) -> CurveClient:
        secret = self.root / f"{name}.key_secret"
        if not secret.exists():
            make_key_pair(secret)
        if enrol:
            (self.enrolled / f"{name}.key").write_bytes((self.root / f"{name}.key").read_bytes())
        return CurveClient(keys=load_key_pair(secret), server_public=self.master.public)

    def revoke(self, name: str) -> None:
        (self.enrolled / f"{name}.key").unlink()


def hello(label: str, *, containment: str = "bwrap 0.8.0") -> dict:
    return {"protocol": PROTOCOL_VERSION, "label": label, "python_tag": "cp313",
            "abi_tag": ABI, "platform_tag": PLATFORM, "python_version": "3.13.1",
            "pip_version": "24.0", "image": "e" * 64, "os": "test", "build_timeout_s": 60, "building": None,
            "containment": containment, "platforms": [PLATFORM]}


def refused_handshake(sock: Socket, timeout_s: float = 5) -> bool:
    """Whether ZeroMQ reports the master refusing this socket's key."""
    monitor = sock.zsocket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        return bool(monitor.poll(int(timeout_s * 1000)))
    finally:
        sock.zsocket.disable_monitor()
        monitor.close(linger=0)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def bound(ctx, kind, protocol, address, **options) -> Socket:
    sock = Socket.make(ctx, kind, protocol, **options)
    sock.bind(address)
    return sock


def stop(task, supervisor: Socket) -> None:
    task._quit = True
    task.join(10)
    assert not task.is_alive()
    failed = task_failure(supervisor)
    assert not failed, f"the task reported a failure: {failed}"


def test_the_slave_socket_takes_enrolled_keys_only_and_follows_revocation(ctx, tmp_path):
    keys = Keys(tmp_path)
    supervisor = bound(ctx, zmq.PULL, SUPERVISOR.reverse(), SUPERVISOR.address)
    queue_requests = bound(ctx, zmq.PULL, QUEUE_REQUESTS.reverse(), QUEUE_REQUESTS.address)
    bound(ctx, zmq.PULL, RECORD_REQUESTS.reverse(), RECORD_REQUESTS.address)
    status = bound(ctx, zmq.PULL, STATUS_REPORTS.reverse(), STATUS_REPORTS.address)
    auth = Authenticator(ctx, keys.enrolled)
    auth.start()
    address = f"tcp://127.0.0.1:{free_port()}"
    task = SlaveDriver(ctx, slave_bind=address, index_url="http://x/simple/", heartbeat_s=5,
                       liveness=3, sleep_s=0.05, retry_delay_s=3600.0, containment_required=True,
                       curve=keys.server())
    queue = Socket.make(ctx, zmq.PUSH, BUILD_QUEUE)
    queue.connect(BUILD_QUEUE.address)
    queue.send("TARGETS", {"targets": []})  # the farm knows no build target yet
    task.start()
    try:
        def slave(name: str, *, enrol: bool = True) -> Socket:
            sock = Socket.make(ctx, zmq.DEALER, SLAVE, curve_client=keys.client(name, enrol=enrol))
            sock.connect(address)
            return sock

        # a key that is not enrolled: refused at the handshake, its HELLO never read
        mallory = slave("mallory", enrol=False)
        mallory.send("HELLO", hello("mallory"))
        assert refused_handshake(mallory)
        assert not mallory.zsocket.poll(300)
        # a socket without keys at all: the same
        plain = Socket.make(ctx, zmq.DEALER, SLAVE)
        plain.connect(address)
        plain.send("HELLO", hello("plain"))
        assert not plain.zsocket.poll(500)

        # an enrolled slave whose builds are not contained: told why
        carol = slave("carol")
        carol.send("HELLO", hello("carol", containment="none: no user namespaces"))
        name, die = recv(carol)
        assert name == "DIE" and "requires contained builds" in die["reason"]
        assert "none: no user namespaces" in die["reason"]

        # an enrolled, contained slave: welcome, and may add its build target
        alice = slave("alice")
        alice.send("HELLO", hello("alice"))
        assert recv(alice)[0] == "ACK"
        assert recv(queue_requests) == ("TARGET", {"abi_tag": ABI, "platform_tag": PLATFORM})
        assert recv(queue_requests)[0] == "IMAGE"
        alice_id = keys.client("alice").keys.key_id
        deadline = time.monotonic() + 5
        report = None
        while report is None or report.get("label") != "alice":
            assert time.monotonic() < deadline, "no report of alice"
            name, payload = recv(status)
            report = payload.get("slave") if name == "SLAVE" else None
        assert (report["key_id"], report["containment"]) == (alice_id, "bwrap 0.8.0")

        queue.send("QUEUE", {"abi_tag": ABI, "platform_tag": PLATFORM,
                             "builds": [{"package": "held", "version": "1",
                                         "failed_by": None, "failed_at": None,
                                         "failed_images": [], "requires_python": None,
                                         "upstream_wheels": []}]})
        time.sleep(0.1)
        alice.send("IDLE", {"stats": STATS})
        assert recv(alice) == ("BUILD", {"package": "held", "version": "1"})
        # revoked while connected: its next message is refused, its build re-queued
        keys.revoke("alice")
        alice.send("BUSY", {"package": "held", "version": "1", "stats": STATS})
        name, die = recv(alice)
        assert name == "DIE" and f"key {alice_id} is not enrolled" in die["reason"]
        heard = [recv(queue_requests) for _ in range(2)]
        assert ("REFRESH", {"package": "held"}) in heard, heard
        assert task.slaves == {} and task.book.active == {}
    finally:
        stop(task, supervisor)
        auth.stop()


def test_the_file_socket_takes_the_expected_slaves_key_only(ctx, tmp_path):
    keys = Keys(tmp_path / "keys")
    supervisor = bound(ctx, zmq.PULL, SUPERVISOR.reverse(), SUPERVISOR.address)
    results = bound(ctx, zmq.PULL, TRANSFER_RESULTS.reverse(), TRANSFER_RESULTS.address)
    auth = Authenticator(ctx, keys.enrolled)
    auth.start()
    address = f"tcp://127.0.0.1:{free_port()}"
    task = FileReceiver(ctx, file_bind=address, output_path=tmp_path / "output",
                        chunk_size=4096, window=2, timeout_s=5, retries=2,
                        max_wheel_size=2**20, deadline_s=30,
                        unpack_limits=UnpackLimits(max_unpacked=2**22, max_ratio=100),
                        curve=keys.server())
    requests = Socket.make(ctx, zmq.PUSH, TRANSFER_REQUESTS)
    requests.connect(TRANSFER_REQUESTS.address)
    task.start()
    wheel = craft_wheel(tmp_path)
    data = wheel.read_bytes()
    alice = keys.client("alice")
    offer = {"slave_id": 1, "filename": wheel.name, "size": len(data),
             "sha256": hashlib.sha256(data).hexdigest()}
    requests.send("EXPECT", {"slave_id": 1, "package": "piw-craft", "version": "1.0",
                             "builder_abi": "cp311", "builder_platform": "linux_x86_64",
                             "builder_platforms": ["linux_x86_64"],
                             "key_id": alice.keys.key_id,
                             "claimed": inspect_wheel(wheel, find_apt_deps=False).to_dict()})
    try:
        def sender(name: str, *, enrol: bool = True) -> Socket:
            sock = Socket.make(ctx, zmq.DEALER, FILE_TRANSFER,
                               curve_client=keys.client(name, enrol=enrol))
            sock.connect(address)
            return sock

        mallory = sender("mallory", enrol=False)  # not enrolled: never heard
        mallory.send("OFFER", offer)
        assert refused_handshake(mallory)
        assert not mallory.zsocket.poll(300)
        bob = sender("bob")  # enrolled, but not the slave whose file this is
        bob.send("OFFER", offer)
        assert recv(bob) == ("RECEIVED", {"filename": wheel.name, "ok": False,
                                          "reason": "not expected"})
        assert task.expected, "bob's offer spent alice's expected file"

        owner = sender("alice")
        owner.send("OFFER", offer)
        name, fetch = recv(owner)
        assert name == "FETCH" and fetch["offset"] == 0
        keys.revoke("alice")  # mid-transfer: the next chunk is refused
        owner.send("CHUNK", {"filename": wheel.name, "offset": 0,
                             "data": data[:fetch["length"]],
                             "crc32": zlib.crc32(data[:fetch["length"]])})
        name, verdict = recv(results)
        assert (name, verdict["retry"]) == ("REJECTED", True)
        assert f"key {alice.keys.key_id} is not enrolled" in verdict["reason"]
        assert not list((tmp_path / "output" / ".transfers").iterdir())
    finally:
        stop(task, supervisor)
        auth.stop()
