"""The master's ZAP handler: which CURVE keys may connect to the slave and file sockets.

pyzmq's :class:`~zmq.auth.thread.ThreadAuthenticator` answers ZeroMQ's
authentication requests (ZAP) for every socket of the master's context in
the :data:`~piwheels.transport.ZAP_DOMAIN`; here it asks the authorised-keys
directory, as it is at each handshake.  ZAP runs only at the handshake: the
sockets themselves check every message's key again (see
:mod:`piwheels.transport`), so a key revoked while connected is refused at
its next message.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..keys import EnrolledKeys, key_id
from ..transport import ZAP_DOMAIN

log = logging.getLogger("piwheels.master.authenticator")

#: a refused key is logged at most this often (a slave retries its handshake
#: every few seconds)
REFUSAL_LOG_INTERVAL_S = 60.0


class EnrolmentCheck:
    """The credentials provider ZAP calls with each connecting key."""

    def __init__(self, enrolled_dir: Path, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enrolled = EnrolledKeys(enrolled_dir, clock=clock)
        self.clock = clock
        self._last_logged: dict[bytes, float] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        """True to let *key* (Z85) connect; never raises (that would stop the handler)."""
        try:
            enrolled = self.enrolled.lookup(key)
        except Exception:  # a bug here must refuse, not stop every handshake
            log.exception("checking a key failed; refused it")
            return False
        if enrolled is not None:
            log.debug("key %s (%s) connected", enrolled.key_id, enrolled.name)
            return True
        now = self.clock()
        if now - self._last_logged.get(key, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            self._last_logged[key] = now
            try:
                shown = key_id(key)
            except ValueError:
                shown = "(not a CURVE key)"
            log.warning("refused a connection from key %s: it is not enrolled in %s "
                        "(piw-keys enrol)", shown, self.enrolled.directory)
        return False


class Authenticator:
    """The ZAP handler of one master context, started before its sockets bind."""

    def __init__(self, ctx: zmq.Context, enrolled_dir: Path) -> None:
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("piwheels.master.zap"))
        self.check = EnrolmentCheck(enrolled_dir)

    def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, self.check)
        log.info("taking slaves whose keys are enrolled in %s (%d now)",
                 self.check.enrolled.directory, len(self.check.enrolled.keys))

    def is_alive(self) -> bool:
        return self._auth.is_alive()

    def stop(self) -> None:
        self._auth.stop()
