"""ZeroMQ sockets that speak one :class:`~piwheels.protocols.Protocol`.

Every message is msgpack-encoded as ``[name, payload]`` (a bulk field, where
the protocol names one, follows in a frame of its own) and checked against
the protocol's schema on the way out (a bug here raises) and on the way in
(bad input raises :class:`ProtocolError`, which callers log and drop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import msgpack
import voluptuous
import zmq

from .errors import BindError
from .protocols import Protocol

log = logging.getLogger("piwheels.transport")


class ProtocolError(Exception):
    """A message that is not valid in this protocol; the text says why."""


class InvalidMessage(ValueError):
    """A message this side was about to send that its schema refuses.

    ``field`` names the offending field (None: the message as a whole) and
    ``why`` says what is wrong with it, for callers that pass on what a user typed.
    """

    def __init__(self, text: str, field: Optional[str], why: str) -> None:
        super().__init__(text)
        self.field = field
        self.why = why


def encode(protocol: Protocol, name: str, payload: Optional[dict] = None) -> list:
    """The frames of one message: ``[name, payload]`` packed, then its bulk field if any."""
    payload = {} if payload is None else payload
    try:
        schema = protocol.sends[name]
    except KeyError:
        raise ValueError(f"{protocol.name}: {name} is not a message this side sends") from None
    try:
        payload = schema(payload)
    except voluptuous.Invalid as exc:
        field = str(exc.path[0]) if exc.path else None
        raise InvalidMessage(f"{protocol.name}: invalid {name} to send: {exc}",
                             field, exc.error_message) from None
    bulk = protocol.frames.get(name)
    data = None
    if bulk is not None:
        payload = dict(payload)
        data = payload.pop(bulk)
    try:
        packed = msgpack.packb([name, payload], use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:  # a number msgpack cannot carry
        raise InvalidMessage(f"{protocol.name}: {name} cannot be encoded: {exc}",
                             None, str(exc)) from None
    return [packed] if bulk is None else [packed, data]


def decode(protocol: Protocol, frames: Sequence) -> tuple[str, dict]:
    """The (name, payload) of one message's frames; a bulk field stays a view of its frame."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    frame = frames[0]
    limit = protocol.max_receive_frame
    if len(frame) > limit:
        raise ProtocolError(f"message of {len(frame)} bytes is over the limit of {limit}")
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True,
                                max_bin_len=limit, max_str_len=limit)
        problem = None
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        problem = type(exc).__name__
    if problem is not None:
        # raised outside the handler: msgpack's exception (which may hold a copy
        # of the frame's bytes) is not kept alive as this one's context
        raise ProtocolError(f"undecodable message ({problem})")
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        raise ProtocolError("message is not a [name, payload] pair")
    name, payload = value
    try:
        schema = protocol.receives[name]
    except KeyError:
        raise ProtocolError(f"unknown message {name[:40]!r}") from None
    if payload is None:
        payload = {}
    bulk = protocol.frames.get(name)
    if (bulk is None) != (len(frames) == 1):
        raise ProtocolError(f"{name} comes in {1 if bulk is None else 2} frame(s), "
                            f"not {len(frames)}")
    if bulk is not None:
        if not isinstance(payload, dict) or bulk in payload:
            raise ProtocolError(f"invalid {name}: {bulk} belongs in its own frame")
        payload[bulk] = frames[1]
    try:
        return name, schema(payload)
    except voluptuous.Invalid as exc:
        raise ProtocolError(f"invalid {name}: {exc}") from None


#: unanswered TCP keepalive probes after which a connection is dropped
KEEPALIVE_PROBES = 3


@dataclass(frozen=True)
class PeerLimits:
    """What one network peer of a socket may hold of the master's resources."""

    #: seconds a new connection has to complete ZeroMQ's handshake before it is
    #: closed (idle or half-open TCP connections would otherwise keep their fd)
    handshake_s: float
    #: seconds a connection may be silent before the kernel probes it (TCP
    #: keepalive), and between probes: a peer that died without closing its
    #: connection is dropped after three unanswered probes
    keepalive_idle_s: float
    keepalive_interval_s: float
    #: messages queued per peer, each direction
    queue: int = 100


class Socket:
    """A ZeroMQ socket bound to one protocol (as seen from this side)."""

    def __init__(self, zsocket: zmq.Socket, protocol: Protocol) -> None:
        self.zsocket = zsocket
        self.protocol = protocol

    @classmethod
    def make(cls, ctx: zmq.Context, kind: int, protocol: Protocol, *,
             linger_ms: int = 0, hwm: int = 10_000, max_frame: Optional[int] = None,
             peers: Optional[PeerLimits] = None) -> "Socket":
        """A socket for *protocol*; ZeroMQ drops a peer whose frame is over *max_frame*
        (default: the protocol's own limit), before the frame is allocated.

        *peers*, for a socket that faces untrusted peers over the network, bounds
        what each one may hold: its queue, its time to say who it is, its silence.
        """
        zsocket = ctx.socket(kind)
        zsocket.setsockopt(zmq.LINGER, linger_ms)
        limit = protocol.max_receive_frame
        zsocket.setsockopt(zmq.MAXMSGSIZE, limit if max_frame is None else min(max_frame, limit))
        if peers is not None:
            hwm = min(hwm, peers.queue)
            zsocket.setsockopt(zmq.HANDSHAKE_IVL, int(peers.handshake_s * 1000))
            # the kernel's keepalive rather than ZeroMQ's heartbeats: a PONG
            # waits behind whatever the master has not read yet, so a busy
            # master (a full queue, a slow disk) would drop healthy slaves
            zsocket.setsockopt(zmq.TCP_KEEPALIVE, 1)
            zsocket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, max(1, round(peers.keepalive_idle_s)))
            zsocket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, round(peers.keepalive_interval_s)))
            zsocket.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_PROBES)
        zsocket.setsockopt(zmq.SNDHWM, hwm)
        zsocket.setsockopt(zmq.RCVHWM, hwm)
        if kind == zmq.ROUTER:
            zsocket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        return cls(zsocket, protocol)

    def bind(self, address: str) -> None:
        """Listen on *address*; :class:`~piwheels.errors.BindError` says why not."""
        try:
            self.zsocket.bind(address)
        except zmq.ZMQError as exc:
            raise BindError(f"cannot listen on {address!r}: {zmq.strerror(exc.errno)}") from None

    def connect(self, address: str) -> None:
        """Connect to *address* (ZeroMQ connects in the background; only a
        malformed address fails here, as :class:`~piwheels.errors.BindError`)."""
        try:
            self.zsocket.connect(address)
        except zmq.ZMQError as exc:
            raise BindError(f"cannot connect to {address!r}: {zmq.strerror(exc.errno)}") from None

    def close(self) -> None:
        self.zsocket.close(linger=0)

    def fileno(self):
        return self.zsocket

    # --- plain (DEALER/PUSH/PULL/REQ/PUB) ------------------------------------

    def send(self, name: str, payload: Optional[dict] = None, *, flags: int = 0) -> None:
        self.zsocket.send_multipart(encode(self.protocol, name, payload), flags=flags, copy=False)

    def recv(self, *, flags: int = 0) -> tuple[str, dict]:
        """The next message; raises :class:`ProtocolError` for a bad one (already consumed)."""
        frames = [f.buffer for f in self.zsocket.recv_multipart(flags=flags, copy=False)]
        return decode(self.protocol, frames)

    # --- ROUTER ----------------------------------------------------------------

    def send_to(self, address: bytes, name: str, payload: Optional[dict] = None) -> bool:
        """Send to one peer; False if that peer is gone (never blocks)."""
        try:
            self.zsocket.send_multipart(
                [address, *encode(self.protocol, name, payload)], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise
        return True

    def recv_from(self) -> tuple[bytes, Any, Any]:
        """(address, name, payload); name is None and payload the error for a bad message."""
        frames = [f.buffer for f in self.zsocket.recv_multipart(copy=False)]
        if len(frames) < 2:
            address = bytes(frames[0]) if frames else b""
            return address, None, ProtocolError(f"expected 2 or 3 frames, got {len(frames)}")
        address = bytes(frames[0])
        try:
            name, payload = decode(self.protocol, frames[1:])
        except ProtocolError as exc:
            # without its traceback, the error holds no frame that holds the message
            return address, None, exc.with_traceback(None)
        return address, name, payload
