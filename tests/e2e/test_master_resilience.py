"""A real piw-master under bad input and restarts: it keeps serving, nothing is lost.

Raw ZeroMQ peers send garbage, wrong schemas and out-of-order messages to
both of the master's sockets; then a real slave must still get its build
done.  Restarting the master (cleanly or with SIGKILL) brings running slaves
back within seconds, and a build running across the restart keeps its place.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import msgpack
import pytest
import sqlalchemy as sa
import zmq
from farm import BIN, CLAIMED_CONTAINMENT, builds_of, pyenv_python

from piwheels.protocols import FILE_TRANSFER, PROTOCOL_VERSION, SLAVE
from piwheels.transport import Socket

pytestmark = pytest.mark.slow



def hello(protocol: int = PROTOCOL_VERSION, **overrides) -> dict:
    payload = {
        "protocol": protocol, "label": "intruder", "python_tag": "cp311", "abi_tag": "cp311",
        "platform_tag": "linux_x86_64", "python_version": "3.11.7", "pip_version": "24.0", "image": "e" * 64,
        "os": "Linux", "build_timeout_s": 60.0, "building": None,
        "containment": CLAIMED_CONTAINMENT, "platforms": ["linux_x86_64"],
    }
    payload.update(overrides)
    return payload


class RawPeer:
    """A hand-driven DEALER on one of the master's ports."""

    def __init__(self, ctx: zmq.Context, port: int, protocol=SLAVE, *, curve=None) -> None:
        self.sock = Socket.make(ctx, zmq.DEALER, protocol, curve_client=curve)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def raw(self, *frames: bytes) -> None:
        self.sock.zsocket.send_multipart(list(frames))

    def packed(self, value) -> None:
        self.raw(msgpack.packb(value, use_bin_type=True))

    def reply(self, timeout_s: float = 5.0):
        assert self.sock.zsocket.poll(int(timeout_s * 1000)), "the master did not answer"
        return self.sock.recv()

    def close(self) -> None:
        self.sock.close()


def test_bad_input_on_both_sockets_is_dropped_and_the_master_keeps_serving(farm, db, release):
    release("after-the-storm", kind="pure")
    farm.start_master()
    ctx = zmq.Context()
    try:
        # garbage before any HELLO: dropped; the peer is told to go
        # an enrolled peer: what a key lets through is checked as carefully
        peer = RawPeer(ctx, farm.slave_port, curve=farm.curve_client("intruder"))
        peer.raw(os.urandom(100))
        assert peer.reply()[0] == "DIE"
        peer.raw(b"a", b"b", b"c")
        assert peer.reply()[0] == "DIE"
        peer.packed(["HELLO", {"protocol": "one"}])  # wrong schema
        assert peer.reply()[0] == "DIE"
        peer.packed(["NONSENSE", {}])
        assert peer.reply()[0] == "DIE"
        # out of order: messages before HELLO make the master ask for one
        peer.sock.send("IDLE", {"stats": {"load_1m": None, "memory_free": None,
                                          "disk_free": None, "temperature_c": None}})
        assert peer.reply()[0] == "RESET"
        # out of order after HELLO: BUILT for a build never handed out
        peer.sock.send("HELLO", hello())
        name, ack = peer.reply()
        assert name == "ACK"
        peer.sock.send("BUILT", {"package": "x", "version": "1", "success": True,
                                 "duration_s": 1.0, "log": "", "reason": None, "files": []})
        name, die = peer.reply()
        assert name == "DIE" and "BUILT" in die["reason"]
        peer.close()

        files = RawPeer(ctx, farm.file_port, FILE_TRANSFER, curve=farm.curve_client("intruder"))
        files.raw(os.urandom(64))
        files.raw(b"x", b"y")
        files.packed(["CHUNK", {"filename": "nope.whl", "offset": 0, "data": b"zz",
                                "crc32": 1}])
        files.packed(["OFFER", {"slave_id": 99, "filename": "a-1.0-py3-none-any.whl",
                                "size": 10, "sha256": "0" * 64}])
        name, verdict = files.reply()
        assert (name, verdict["ok"]) == ("RECEIVED", False)
        files.close()
    finally:
        ctx.destroy(linger=0)

    farm.start_slave("honest", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "after-the-storm"), 120, "the honest slave's build")
    (build,) = builds_of(db, "after-the-storm")
    assert build.status == "success"
    log = farm.master.log()
    assert "task failed" not in log and "Traceback" not in log
    assert farm.master.proc.poll() is None


def test_a_slave_of_another_protocol_version_is_refused_with_a_reason(farm):
    farm.start_master()
    ctx = zmq.Context()
    try:
        peer = RawPeer(ctx, farm.slave_port, curve=farm.curve_client("intruder"))
        peer.sock.send("HELLO", hello(protocol=PROTOCOL_VERSION + 1))
        name, die = peer.reply()
        assert name == "DIE"
        assert f"protocol version {PROTOCOL_VERSION + 1}" in die["reason"]
        assert "same piwheels version" in die["reason"]
    finally:
        ctx.destroy(linger=0)


def connections(slave) -> int:
    return len(re.findall(r"connected to the master as slave", slave.log()))


def test_restarted_master_has_its_slaves_back_within_seconds(farm, db, release):
    farm.start_master()
    slave = farm.start_slave("steady", pyenv_python("11"))
    farm.wait(lambda: connections(slave) == 1, 60, "the slave to connect")
    assert farm.master.stop() == 0
    farm.start_master()
    restarted = time.monotonic()
    farm.wait(lambda: connections(slave) == 2, 15, "the slave to come back")
    back_after = time.monotonic() - restarted
    assert back_after < 10, back_after
    release("post-restart", kind="pure")
    farm.wait(lambda: builds_of(db, "post-restart"), 120, "a build after the restart")
    assert builds_of(db, "post-restart")[0].status == "success"


def test_a_build_keeps_its_place_across_a_master_crash(farm, db, release):
    release("long-haul", setup_body="import time\ntime.sleep(6)\n")
    farm.start_master()
    slave = farm.start_slave("patient", pyenv_python("11"))
    slave.wait_log("building long-haul 1.0", 60)
    farm.master.kill()  # SIGKILL: no goodbye to anyone
    farm.start_master()
    farm.wait(lambda: builds_of(db, "long-haul"), 120, "the build to be recorded")
    (build,) = builds_of(db, "long-haul")
    assert (build.status, build.slave_label) == ("success", "patient")
    # the slave kept building: it was never told to build it a second time
    assert slave.log().count("building long-haul 1.0") == 1
    transfers = farm.output / ".transfers"
    assert not transfers.exists() or not any(transfers.iterdir())


def test_a_failing_task_stops_the_master_with_a_non_zero_status(farm, schema_database,
                                                                 master_role):
    farm.start_master()
    # take away a right the stats task needs on its next look at the database
    # (the database is shared by the session's tests: the right comes back after)
    engine = sa.create_engine(schema_database["superuser"])
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'REVOKE SELECT ON builds FROM "{master_role}"')
        assert farm.master.proc.wait(30) != 0
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'GRANT SELECT ON builds TO "{master_role}"')
        engine.dispose()
    farm.master.expected_exit = True
    log = farm.master.log()
    assert "stopping: task" in log and "master stopped" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is of root")
def test_the_slave_refuses_to_run_as_root(tmp_path):
    result = subprocess.run(
        [str(BIN / "piw-slave"), "--master", "127.0.0.1", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: piw-slave refuses to run as root: builds run arbitrary code from the "
        "upstream index; run it as an unprivileged user"]
