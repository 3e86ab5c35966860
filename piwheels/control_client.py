"""Talking to a running master's control socket and status feed (admin tools, monitor)."""

from __future__ import annotations

import getpass
import os
import stat
from pathlib import Path
from typing import Optional

import zmq

from .errors import InvalidRequest, PiwheelsError
from .protocols import CONTROL, STATUS
from .transport import InvalidMessage, ProtocolError, Socket, encode


class MasterUnavailable(PiwheelsError):
    """The master did not answer: it is not running, or the address is wrong."""


def ipc_problem(address: str) -> Optional[str]:
    """Why an ``ipc://`` address cannot be the master's socket for us, or None.

    ZeroMQ connects to a missing or forbidden ipc socket without complaint and
    just waits; this says at once what is wrong.  Other transports: None.
    """
    if not address.startswith("ipc://"):
        return None
    path = Path(address[len("ipc://"):])
    forbidden = (f"{getpass.getuser()} may not use {path}: the master's sockets are open "
                 "only to its user and group; join that group or run as that user")
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return (f"there is no socket at {path}: piw-master is not running, or it uses "
                "another address")
    except PermissionError:
        return forbidden
    if not stat.S_ISSOCK(mode):
        return f"{path} is not a socket"
    if not os.access(path, os.R_OK | os.W_OK):
        return forbidden
    return None


class ControlClient:
    """Requests to the master's admin_service, one at a time.

    :meth:`request` and :meth:`command` wait for the answer.  A program that
    must not block (the monitor) uses :meth:`send` and polls :meth:`reply`;
    when it gives up waiting it calls :meth:`reconnect`, so a late answer to
    the abandoned request is never taken for the answer to the next one.
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0,
                 ctx: Optional[zmq.Context] = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.ctx = ctx or zmq.Context.instance()
        self.sock: Optional[Socket] = None
        #: the name of the request whose answer has not come yet
        self.pending: Optional[str] = None
        self.reconnect()

    def reconnect(self) -> None:
        """A fresh socket (linger 0): anything asked before is forgotten."""
        if self.sock is not None:
            self.sock.close()
        self.sock = Socket.make(self.ctx, zmq.DEALER, CONTROL)
        self.sock.connect(self.address)
        self.pending = None

    def send(self, name: str, payload: Optional[dict] = None) -> None:
        """Ask without waiting; the answer comes from :meth:`reply`."""
        if self.pending is not None:
            raise RuntimeError(f"{name} sent while the answer to {self.pending} is awaited")
        self.check(name, payload)
        try:
            self.sock.send(name, payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise MasterUnavailable(f"cannot send {name} to {self.address}") from None
        self.pending = name

    @staticmethod
    def check(name: str, payload: Optional[dict] = None) -> None:
        """Raise :class:`~piwheels.errors.InvalidRequest` (one line naming the field)
        unless the request fits the control protocol; a tool that sends several
        checks them all first, so none is sent when one would be refused."""
        try:
            encode(CONTROL, name, payload)
        except InvalidMessage as exc:
            what = f"the {exc.field} given" if exc.field else f"the {name} request"
            raise InvalidRequest(f"{what} cannot be sent: {exc.why}") from None

    def reply(self, timeout_s: float = 0.0) -> Optional[tuple[str, dict]]:
        """The answer to the request sent, if it comes within *timeout_s* (else None)."""
        if self.pending is None or not self.sock.zsocket.poll(int(timeout_s * 1000)):
            return None
        self.pending = None
        try:
            return self.sock.recv()
        except ProtocolError as exc:
            raise MasterUnavailable(f"the master sent a bad answer: {exc}") from None

    def request(self, name: str, payload: Optional[dict] = None) -> tuple[str, dict]:
        """Send *name* and wait for the master's reply; raise if none comes."""
        self.send(name, payload)
        answer = self.reply(self.timeout_s)
        if answer is None:
            self.reconnect()
            why = ipc_problem(self.address) or "is piw-master running (and is " \
                                               "--control-address the same)?"
            raise MasterUnavailable(
                f"the master did not answer on {self.address} within "
                f"{self.timeout_s:g} s; {why}")
        return answer

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
        self.address = address
        self.ctx = ctx or zmq.Context.instance()
        self.sock: Optional[Socket] = None
        self.reconnect()

    def reconnect(self) -> None:
        """A fresh subscription (after the master went away, say)."""
        if self.sock is not None:
            self.sock.close()
        self.sock = Socket.make(self.ctx, zmq.SUB, STATUS.reverse())
        self.sock.zsocket.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(self.address)

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
