"""Why the master does not answer: its refusals of this slave's CURVE handshake.

A master that refuses a key (not enrolled, or revoked) never sees a message
from it: ZeroMQ retries the handshake in silence.  The socket monitor reports
each failed handshake; the slave says why, in one line, at most once a minute,
and keeps trying (the operator may enrol it meanwhile).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("piwheels.slave")

#: a repeated refusal is said at most this often
WARNING_INTERVAL_S = 60.0
_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class HandshakeWatch:
    """Watches one socket's handshakes; :meth:`handle` when :attr:`socket` is readable."""

    def __init__(self, zsocket: zmq.Socket, key_id: str, what: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.zsocket = zsocket
        self.key_id = key_id
        self.what = what
        self.clock = clock
        self.socket: Optional[zmq.Socket] = zsocket.get_monitor_socket(_EVENTS)
        self.refusals = 0
        self._next_warning_s = 0.0

    def handle(self) -> Optional[str]:
        """Read one event; the line said about it (None: nothing said now)."""
        try:
            event = recv_monitor_message(self.socket, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return None
        self.refusals += 1
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            line = (f"the master refused this slave's key {self.key_id} on its {self.what} "
                    f"socket: it is not enrolled, or was revoked (on the master: piw-keys "
                    f"enrol <this slave's public key file>); still trying")
        else:
            line = (f"the CURVE handshake with the master's {self.what} socket failed: is "
                    f"--master-public-key the master's public key?; still trying")
        now = self.clock()
        if now < self._next_warning_s:
            return None
        self._next_warning_s = now + WARNING_INTERVAL_S
        log.warning("%s", line)
        return line

    def close(self) -> None:
        if self.socket is not None:
            try:
                self.zsocket.disable_monitor()
            except zmq.ZMQError:
                pass
            self.socket.close(linger=0)
            self.socket = None
