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
    """Watches the handshakes of the socket :meth:`attach`-ed (each fresh one in
    turn: the once-a-minute limit spans reconnections); :meth:`handle` when
    :attr:`socket` is readable."""

    def __init__(self, key_id: Optional[str], what: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.zsocket: Optional[zmq.Socket] = None
        self.key_id = key_id
        self.what = what
        self.clock = clock
        self.socket: Optional[zmq.Socket] = None
        self.refusals = 0
        self._next_warning_s = 0.0

    def attach(self, zsocket: zmq.Socket) -> None:
        """Watch *zsocket* (before it connects), instead of the one before."""
        self.close()
        self.zsocket = zsocket
        self.socket = zsocket.get_monitor_socket(_EVENTS)

    def handle(self) -> Optional[str]:
        """Read one event; the line said about it (None: nothing said now)."""
        try:
            event = recv_monitor_message(self.socket, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return None
        self.refusals += 1
        mismatch = (event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    and event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            line = (f"the master refused this slave's key {self.key_id} on its {self.what} "
                    f"socket: it is not enrolled, or was revoked (on the master: piw-keys "
                    f"enrol <this slave's public key file>); still trying")
        elif self.key_id is None:  # nothing else fails a handshake without keys
            line = ("the master takes only slaves with enrolled keys, and this slave has "
                    "none: make one with piw-keys slave-init, set --slave-key and "
                    "--master-public-key, and have it enrolled; still trying")
        elif mismatch:
            line = ("this slave has a key but the master has none (it runs without "
                    "--master-key): unset --slave-key, or give the master its keys; "
                    "still trying")
        else:
            log.debug("handshake event %s (%s)", event["event"], event["value"])
            line = (f"the CURVE handshake with the master's {self.what} socket failed: is "
                    f"--master-public-key the master's public key?; still trying")
        now = self.clock()
        if now < self._next_warning_s:
            return None
        self._next_warning_s = now + WARNING_INTERVAL_S
        log.warning("%s", line)
        return line

    def close(self) -> None:
        """Stop watching (before the socket watched is closed)."""
        if self.socket is not None:
            try:
                self.zsocket.disable_monitor()
            except zmq.ZMQError:
                pass
            self.socket.close(linger=0)
            self.socket = None
            self.zsocket = None
