"""Talking to a running master's control socket and status feed (admin tools, monitor)."""

from __future__ import annotations

from typing import Optional

import zmq

from .errors import PiwheelsError
from .protocols import CONTROL, STATUS
from .transport import ProtocolError, Socket


class MasterUnavailable(PiwheelsError):
    """The master did not answer: it is not running, or the address is wrong."""


class ControlClient:
    """One request at a time to the master's admin_service."""

    def __init__(self, address: str, *, timeout_s: float = 10.0,
                 ctx: Optional[zmq.Context] = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.ctx = ctx or zmq.Context.instance()
        self.sock = Socket.make(self.ctx, zmq.DEALER, CONTROL)
        self.sock.connect(address)

    def request(self, name: str, payload: Optional[dict] = None) -> tuple[str, dict]:
        """Send *name* and wait for the master's reply; raise if none comes."""
        self.sock.send(name, payload)
        if not self.sock.zsocket.poll(int(self.timeout_s * 1000)):
            raise MasterUnavailable(
                f"the master did not answer on {self.address} within {self.timeout_s:.0f} s; "
                "is piw-master running (and is --control-address the same)?")
        try:
            return self.sock.recv()
        except ProtocolError as exc:
            raise MasterUnavailable(f"the master sent a bad answer: {exc}") from None

    def command(self, name: str, payload: Optional[dict] = None) -> str:
        """A request whose reply is OK or ERROR: the message, or an error raised."""
        reply, answer = self.request(name, payload)
        if reply == "ERROR":
            raise PiwheelsError(answer["message"])
        return answer.get("message", "")

    def close(self) -> None:
        self.sock.close()


class StatusFeed:
    """The master's published status (MASTER, SLAVE, SLAVE_GONE messages)."""

    def __init__(self, address: str, *, ctx: Optional[zmq.Context] = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = Socket.make(self.ctx, zmq.SUB, STATUS.reverse())
        self.sock.zsocket.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)

    def poll(self, timeout_s: float) -> Optional[tuple[str, dict]]:
        """The next status message within *timeout_s*, or None (bad ones are skipped)."""
        if not self.sock.zsocket.poll(int(timeout_s * 1000)):
            return None
        try:
            return self.sock.recv()
        except ProtocolError:
            return None

    def close(self) -> None:
        self.sock.close()
