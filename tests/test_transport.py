"""The protocol declarations and the transport that checks every message."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from voluptuous import Invalid

from piwheels import limits
from piwheels.protocols import (
    ALL_PROTOCOLS, CONTROL, ENVELOPE_BYTES, FILE_TRANSFER, MAX_APT_NAME_CHARS, MAX_BUILT_FILES,
    MAX_FACT_ITEMS, MAX_LOG_CHARS, MAX_METADATA_BYTES, MAX_REQUIREMENT_CHARS,
    MAX_SLAVE_FRAME_BYTES, PROTOCOL_VERSION, SLAVE, blob, number, one_of, optional, text,
)
from piwheels.transport import PeerLimits, ProtocolError, Socket, decode, encode

HELLO = {
    "protocol": PROTOCOL_VERSION, "label": "pi4", "python_tag": "cp311", "abi_tag": "cp311",
    "platform_tag": "linux_armv7l", "python_version": "3.11.2", "pip_version": "23.0", "image": "e" * 64,
    "os": "Raspberry Pi OS", "build_timeout_s": 3600, "building": None,
    "containment": "bwrap 0.8.0", "platforms": ["linux_x86_64"],
}
IDLE = {"stats": {"load_1m": 0.25, "memory_free": 2**30, "disk_free": None,
                  "temperature_c": 48.5}}


def test_round_trip():
    frames = encode(SLAVE, "HELLO", HELLO)
    assert len(frames) == 1
    assert decode(SLAVE.reverse(), frames) == ("HELLO", HELLO)


def test_sender_checks_its_own_messages():
    with pytest.raises(ValueError, match="invalid HELLO"):
        encode(SLAVE, "HELLO", {**HELLO, "label": ""})
    with pytest.raises(ValueError, match="not a message this side sends"):
        encode(SLAVE, "ACK", {})


@pytest.mark.parametrize("frame, why", [
    (b"\xc1\xc1garbage", "undecodable"),
    (msgpack.packb({"not": "a pair"}), "not a \\[name, payload\\] pair"),
    (msgpack.packb(["LAUNCH", {}]), "unknown message"),
    (msgpack.packb(["HELLO", {**HELLO, "protocol": "one"}]), "invalid HELLO"),
    (msgpack.packb(["HELLO", {**HELLO, "extra": 1}]), "invalid HELLO"),
    (msgpack.packb(["IDLE", {"unexpected": True}]), "invalid IDLE"),
    (msgpack.packb(["BUSY", {}]), "invalid BUSY"),
])
def test_receiver_rejects_bad_input(frame, why):
    with pytest.raises(ProtocolError, match=why):
        decode(SLAVE.reverse(), [frame])


def test_every_protocol_is_one_sided():
    for protocol in ALL_PROTOCOLS:
        assert protocol.sends or protocol.receives
        assert protocol.reverse().reverse() == protocol


def test_chunk_data_travels_in_its_own_frame():
    payload = {"filename": "a.whl", "offset": 0, "data": b"\x00" * 10, "crc32": 123}
    frames = encode(FILE_TRANSFER, "CHUNK", payload)
    assert len(frames) == 2 and frames[1] is payload["data"]  # not copied
    assert msgpack.unpackb(frames[0]) == ["CHUNK", {"filename": "a.whl", "offset": 0,
                                                    "crc32": 123}]
    received = decode(FILE_TRANSFER.reverse(), [frames[0], memoryview(frames[1])])[1]
    assert isinstance(received["data"], memoryview) and received == payload
    header = {k: v for k, v in payload.items() if k != "data"}
    master, slave = FILE_TRANSFER.reverse(), FILE_TRANSFER
    for side, frames, why in [
        (master, [msgpack.packb(["CHUNK", header])], "comes in 2 frame"),
        (master, [msgpack.packb(["CHUNK", payload], use_bin_type=True), b"x"], "its own frame"),
        (master, [msgpack.packb(["CHUNK", {**header, "crc32": -1}]), b"x"], "invalid CHUNK"),
        (master, [msgpack.packb(["CHUNK", header]), b""], "invalid CHUNK"),
        (master, [b"a", b"b", b"c"], "expected 1 or 2 frames"),
        (slave, [msgpack.packb(["FETCH", {"filename": "a", "offset": 0, "length": 1}]), b"x"],
         "comes in 1 frame"),
    ]:
        with pytest.raises(ProtocolError, match=why):
            decode(side, frames)


def test_router_reports_bad_messages_without_raising():
    ctx = zmq.Context()
    router = Socket.make(ctx, zmq.ROUTER, SLAVE.reverse())
    router.bind("tcp://127.0.0.1:*")
    address = router.zsocket.getsockopt_string(zmq.LAST_ENDPOINT)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(address)
    try:
        dealer.send(b"junk")
        dealer.send_multipart([b"three", b"more", b"frames"])
        dealer.send_multipart(encode(SLAVE, "IDLE", IDLE))
        results = [router.recv_from() for _ in range(3)]
        assert results[0][1] is None and isinstance(results[0][2], ProtocolError)
        assert results[1][1] is None and "expected 1 or 2 frames" in str(results[1][2])
        assert results[2][1:] == ("IDLE", IDLE)
        assert router.send_to(results[2][0], "CONT")
        assert decode(SLAVE, dealer.recv_multipart()) == ("CONT", {})
        assert not router.send_to(b"nobody", "CONT")
    finally:
        dealer.close(0)
        router.close()
        ctx.destroy(linger=0)


def test_field_types_say_what_is_wrong():
    checks = [
        (text(1, 3), "", "length 0 is outside 1..3"),
        (text(1, 3), "abcd", "length 4 is outside 1..3"),
        (text(1, 3), b"ab", "expected str, not bytes"),
        (blob(1, 2), "ab", "expected bytes, not str"),
        (blob(1, 2), memoryview(b"abc"), "length 3 is outside 1..2"),
        (number(0), -1, "-1 is below 0"),
        (number(0, above=True), 0, "0 is not above 0"),
        (number(0, 10), 11, "11 is above 10"),
        (number(0, integer=True), 1.5, "expected int, not float"),
        (number(0), True, "expected number, not bool"),
        (optional(text(1, 3)), "", "length 0 is outside 1..3"),
        (one_of("pause", "stop"), "go", "expected one of pause, stop"),
        (one_of("pause", "stop"), 1, "expected one of pause, stop"),
    ]
    for validate, value, why in checks:
        with pytest.raises(Invalid, match=why):
            validate(value)
    assert text(1, 3)("abc") == "abc" and optional(text(1, 3))(None) is None
    assert number(0, above=True)(0.5) == 0.5 and number(0, integer=True)(0) == 0
    view = memoryview(b"ab")
    assert blob(1, 2)(view) is view and one_of("pause", "stop")("stop") == "stop"


def test_peer_facing_sockets_take_their_limits_from_the_protocol():
    ctx = zmq.Context()
    try:
        peers = PeerLimits(handshake_s=3, keepalive_idle_s=6, keepalive_interval_s=2, queue=8)
        router = Socket.make(ctx, zmq.ROUTER, SLAVE.reverse(), peers=peers).zsocket
        assert router.getsockopt(zmq.MAXMSGSIZE) == MAX_SLAVE_FRAME_BYTES
        assert (router.getsockopt(zmq.RCVHWM), router.getsockopt(zmq.SNDHWM)) == (8, 8)
        assert router.getsockopt(zmq.HANDSHAKE_IVL) == 3000
        assert (router.getsockopt(zmq.TCP_KEEPALIVE), router.getsockopt(zmq.TCP_KEEPALIVE_IDLE),
                router.getsockopt(zmq.TCP_KEEPALIVE_INTVL)) == (1, 6, 2)
        # a tighter cap than the protocol's may be asked for, never a looser one
        files = Socket.make(ctx, zmq.ROUTER, FILE_TRANSFER.reverse(), max_frame=2**20).zsocket
        assert files.getsockopt(zmq.MAXMSGSIZE) == 2**20
        loose = Socket.make(ctx, zmq.ROUTER, CONTROL.reverse(), max_frame=2**30).zsocket
        assert loose.getsockopt(zmq.MAXMSGSIZE) == ENVELOPE_BYTES
        # a slave accepts from the master only frames its messages need
        slave = Socket.make(ctx, zmq.DEALER, SLAVE).zsocket
        assert slave.getsockopt(zmq.MAXMSGSIZE) == ENVELOPE_BYTES
        for sock in (router, files, loose, slave):
            sock.close(linger=0)
    finally:
        ctx.term()


def test_the_largest_valid_built_fits_the_slave_frame_limit():
    facts = {
        "filename": "x" * limits.FILENAME, "size": 1, "sha256": "0" * 64,
        "package_tag": "p" * limits.NAME, "version_tag": "v" * limits.VERSION,
        "py_tag": "t" * limits.TAG, "abi_tag": "t" * limits.TAG,
        "platform_tag": "t" * limits.TAG, "requires_python": "r" * limits.REQUIRES_PYTHON,
        "requires_dist": ["\U0001F600" * MAX_REQUIREMENT_CHARS] * MAX_FACT_ITEMS,
        "metadata": b"m" * MAX_METADATA_BYTES, "metadata_sha256": "0" * 64,
        "apt_dependencies": ["\U0001F600" * MAX_APT_NAME_CHARS] * MAX_FACT_ITEMS,
    }
    built = {"package": "p" * 200, "version": "v" * 200, "success": True, "duration_s": 1.0,
             "log": "\U0001F600" * MAX_LOG_CHARS, "reason": "r" * 500,
             "files": [facts] * MAX_BUILT_FILES}
    [frame] = encode(SLAVE, "BUILT", built)
    assert len(frame) <= MAX_SLAVE_FRAME_BYTES
    assert decode(SLAVE.reverse(), [frame])[0] == "BUILT"
    with pytest.raises(ValueError, match="over the limit of 4"):
        encode(SLAVE, "BUILT", {**built, "files": [facts] * (MAX_BUILT_FILES + 1)})


def test_a_bad_frame_is_reported_without_holding_on_to_it():
    ctx = zmq.Context()
    try:
        router = Socket.make(ctx, zmq.ROUTER, SLAVE.reverse())
        router.bind("inproc://bad-frames")
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect("inproc://bad-frames")
        dealer.send(b"\x00" * 1000)
        address, name, error = router.recv_from()
        assert name is None and isinstance(error, ProtocolError)
        # no traceback (whose frames hold the message) and no chained msgpack error
        assert error.__traceback__ is None and error.__context__ is None
        dealer.close(linger=0)
        router.close()
    finally:
        ctx.term()
