"""Telling systemd how a daemon is doing (sd_notify), when it runs under systemd.

Everything here does nothing when ``NOTIFY_SOCKET`` is not set.
"""

from __future__ import annotations

import os
import socket
from typing import Optional


class SystemdNotifier:
    """Sends READY, WATCHDOG and STOPPING notifications to the service manager."""

    def __init__(self, environ: Optional[dict] = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        watchdog_usec = environ.get("WATCHDOG_USEC")
        watchdog_pid = environ.get("WATCHDOG_PID")
        self.watchdog_interval_s: Optional[float] = None
        if watchdog_usec and (not watchdog_pid or int(watchdog_pid) == os.getpid()):
            # ping at half the period systemd allows
            self.watchdog_interval_s = int(watchdog_usec) / 1_000_000 / 2

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(state.encode("utf-8"))
            except OSError:
                pass  # systemd went away: nothing useful to do

    def ready(self) -> None:
        self.notify("READY=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
