"""ZeroMQ sockets that speak one :class:`~piwheels.protocols.Protocol`.

Every message is msgpack-encoded as ``[name, payload]`` (a bulk field, where
the protocol names one, follows in a frame of its own) and checked against
the protocol's schema on the way out (a bug here raises) and on the way in
(bad input raises :class:`ProtocolError`, which callers log and drop).

The slave and file sockets are encrypted and authenticated with ZeroMQ
CURVE (:class:`CurveServer`, :class:`CurveClient`).  ZeroMQ asks the
master's ZAP handler about a key only at the handshake, so a server socket
also checks each message's key (its ``User-Id``) against the enrolled keys
as they are now: a key revoked while connected is refused at its next
message (:class:`PeerRefused`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import msgpack
import voluptuous
import zmq

from .errors import BindError
from .keys import EnrolledKeys, KeyPair, key_id
from .protocols import Protocol

log = logging.getLogger("piwheels.transport")


class ProtocolError(Exception):
    """A message that is not valid in this protocol; the text says why."""


class PeerRefused(ProtocolError):
    """A message whose sender's key is not (or no longer) enrolled."""


#: what CURVE adds to each frame on the wire (command name, flags, nonce, MAC),
#: where ZeroMQ's MAXMSGSIZE is checked
CURVE_FRAME_OVERHEAD_BYTES = 33
#: the ZAP domain of the master's CURVE sockets (the ZAP handler answers for it only)
ZAP_DOMAIN = "piwheels"


@dataclass(frozen=True)
class CurveServer:
    """What a master socket needs to take only enrolled slaves: its key pair and
    the authorised-keys directory (each socket follows it with a view of its own)."""

    keys: KeyPair
    enrolled_dir: str


@dataclass(frozen=True)
class CurveClient:
    """What a slave socket needs to reach the master: its own pair and the master's
    public key."""

    keys: KeyPair
    server_public: bytes


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

    def __init__(self, zsocket: zmq.Socket, protocol: Protocol,
                 enrolled: Optional[EnrolledKeys] = None) -> None:
        self.zsocket = zsocket
        self.protocol = protocol
        #: a CURVE server's view of the enrolled keys (None: no keys checked)
        self.enrolled = enrolled

    @classmethod
    def make(cls, ctx: zmq.Context, kind: int, protocol: Protocol, *,
             linger_ms: int = 0, hwm: int = 10_000, max_frame: Optional[int] = None,
             peers: Optional[PeerLimits] = None,
             curve_server: Optional[CurveServer] = None,
             curve_client: Optional[CurveClient] = None) -> "Socket":
        """A socket for *protocol*; ZeroMQ drops a peer whose frame is over *max_frame*
        (default: the protocol's own limit), before the frame is allocated.

        *peers*, for a socket that faces untrusted peers over the network, bounds
        what each one may hold: its queue, its time to say who it is, its silence.
        *curve_server* / *curve_client*: encrypt and authenticate with CURVE.
        """
        zsocket = ctx.socket(kind)
        zsocket.setsockopt(zmq.LINGER, linger_ms)
        enrolled = None
        if curve_server is not None:
            zsocket.curve_secretkey = curve_server.keys.secret
            zsocket.curve_publickey = curve_server.keys.public
            zsocket.curve_server = True
            zsocket.zap_domain = ZAP_DOMAIN.encode()
            # no ZAP handler answering (it stopped): refuse, never let everyone in
            zsocket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            enrolled = EnrolledKeys(curve_server.enrolled_dir)
        elif curve_client is not None:
            zsocket.curve_secretkey = curve_client.keys.secret
            zsocket.curve_publickey = curve_client.keys.public
            zsocket.curve_serverkey = curve_client.server_public
        limit = protocol.max_receive_frame
        limit = limit if max_frame is None else min(max_frame, limit)
        if curve_server is not None or curve_client is not None:
            limit += CURVE_FRAME_OVERHEAD_BYTES  # ZeroMQ checks the frame as it travels
        zsocket.setsockopt(zmq.MAXMSGSIZE, limit)
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
        return cls(zsocket, protocol, enrolled)

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
        address, name, payload, _ = self.recv_from_peer()
        return address, name, payload

    def recv_from_peer(self) -> tuple[bytes, Any, Any, Optional[str]]:
        """(address, name, payload, key id): :meth:`recv_from` plus the id of the
        sender's enrolled key (None on a socket without CURVE).  A message from a
        key not enrolled now comes as name None and a :class:`PeerRefused`."""
        received = self.zsocket.recv_multipart(copy=False)
        peer_key = None
        if self.enrolled is not None and received:
            problem, peer_key = self._check_peer(received[0])
            if problem is not None:
                address = bytes(received[0].buffer)
                return address, None, PeerRefused(problem), peer_key
        frames = [f.buffer for f in received]
        if len(frames) < 2:
            address = bytes(frames[0]) if frames else b""
            return (address, None, ProtocolError(f"expected 2 or 3 frames, got {len(frames)}"),
                    peer_key)
        address = bytes(frames[0])
        try:
            name, payload = decode(self.protocol, frames[1:])
        except ProtocolError as exc:
            # without its traceback, the error holds no frame that holds the message
            return address, None, exc.with_traceback(None), peer_key
        return address, name, payload, peer_key

    def _check_peer(self, frame: zmq.Frame) -> tuple[Optional[str], Optional[str]]:
        """(why the sender is refused or None, its key id) from the User-Id the ZAP
        handler gave its connection: the Z85 public key."""
        try:
            user = frame.get("User-Id")
        except zmq.ZMQError:
            user = ""
        if not user:
            return "the sender has no CURVE key", None
        try:
            peer = key_id(user)
        except ValueError:
            return "the sender's key is not a CURVE key", None
        if self.enrolled.lookup(user) is None:
            return f"key {peer} is not enrolled (revoked?)", peer
        return None, peer
