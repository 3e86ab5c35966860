"""The protocol declarations and the transport that checks every message."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from piwheels.protocols import ALL_PROTOCOLS, FILE_TRANSFER, PROTOCOL_VERSION, SLAVE
from piwheels.transport import ProtocolError, Socket, decode, encode

HELLO = {
    "protocol": PROTOCOL_VERSION, "label": "pi4", "python_tag": "cp311", "abi_tag": "cp311",
    "platform_tag": "linux_armv7l", "python_version": "3.11.2", "pip_version": "23.0",
    "os": "Raspberry Pi OS", "build_timeout_s": 3600, "building": None,
}
IDLE = {"stats": {"load_1m": 0.25, "memory_free": 2**30, "disk_free": None,
                  "temperature_c": 48.5}}


def test_round_trip():
    frame = encode(SLAVE, "HELLO", HELLO)
    assert decode(SLAVE.reverse(), frame) == ("HELLO", HELLO)


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
        decode(SLAVE.reverse(), frame)


def test_every_protocol_is_one_sided():
    for protocol in ALL_PROTOCOLS:
        assert protocol.sends or protocol.receives
        assert protocol.reverse().reverse() == protocol


def test_chunk_carries_bytes_and_crc():
    payload = {"filename": "a.whl", "offset": 0, "data": b"\x00" * 10, "crc32": 123}
    assert decode(FILE_TRANSFER.reverse(), encode(FILE_TRANSFER, "CHUNK", payload))[1] == payload
    with pytest.raises(ProtocolError):
        decode(FILE_TRANSFER.reverse(), msgpack.packb(
            ["CHUNK", {**payload, "data": "text, not bytes"}], use_bin_type=True))


def test_router_reports_bad_messages_without_raising():
    ctx = zmq.Context()
    router = Socket.make(ctx, zmq.ROUTER, SLAVE.reverse())
    router.bind("tcp://127.0.0.1:*")
    address = router.zsocket.getsockopt_string(zmq.LAST_ENDPOINT)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(address)
    try:
        dealer.send(b"junk")
        dealer.send_multipart([b"two", b"frames"])
        dealer.send(encode(SLAVE, "IDLE", IDLE))
        results = [router.recv_from() for _ in range(3)]
        assert results[0][1] is None and isinstance(results[0][2], ProtocolError)
        assert results[1][1] is None and "expected 2 frames" in str(results[1][2])
        assert results[2][1:] == ("IDLE", IDLE)
        assert router.send_to(results[2][0], "CONT")
        assert decode(SLAVE, dealer.recv()) == ("CONT", {})
        assert not router.send_to(b"nobody", "CONT")
    finally:
        dealer.close(0)
        router.close()
        ctx.destroy(linger=0)
