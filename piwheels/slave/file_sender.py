"""The slave's side of the file transfer: offer a wheel, serve the chunks asked for.

The master drives the transfer (see :mod:`piwheels.master.file_receiver`):
the slave only answers FETCH with CHUNK until the master says RECEIVED.  The
socket is separate from the slave protocol's so that large chunks never
delay heartbeats.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import zmq

from .. import limits
from ..protocols import FILE_TRANSFER
from ..transport import CurveClient, ProtocolError, Socket

log = logging.getLogger("piwheels.slave.file_sender")


class FileSender:
    """Serves one offered file at a time over a DEALER socket."""

    def __init__(self, ctx: zmq.Context, address: str, *,
                 clock: Callable[[], float] = time.monotonic,
                 curve: Optional[CurveClient] = None) -> None:
        self.ctx = ctx
        self.address = address
        self.curve = curve
        self.clock = clock
        self.filename: Optional[str] = None
        self.size = 0
        self.file: Optional[BinaryIO] = None
        self.chunks_sent = 0
        self.socket = self._connect()

    def _connect(self) -> Socket:
        sock = Socket.make(self.ctx, zmq.DEALER, FILE_TRANSFER, curve_client=self.curve)
        sock.connect(self.address)
        return sock

    def offer(self, slave_id: int, path: Path, size: int, sha256: str) -> None:
        """Announce *path*; the master then fetches it chunk by chunk."""
        self._close_file()
        self.filename = Path(path).name
        self.size = size
        self.file = open(path, "rb")
        self.socket.send("OFFER", {"slave_id": slave_id, "filename": self.filename,
                                   "size": size, "sha256": sha256})

    def handle(self) -> Optional[tuple[bool, Optional[str]]]:
        """Answer one message; ``(ok, reason)`` once the master has the verdict."""
        try:
            name, payload = self.socket.recv()
        except ProtocolError as exc:
            log.error("ignored a bad file-transfer message: %s", exc)
            return None
        if payload["filename"] != self.filename:
            log.debug("ignored %s for %s, which is not on offer", name, payload["filename"])
            return None
        if name == "RECEIVED":
            self._close_file()
            return payload["ok"], payload["reason"]
        self._send_chunk(payload["offset"], payload["length"])
        return None

    def _send_chunk(self, offset: int, length: int) -> None:
        if offset >= self.size or offset + length > self.size:
            self.socket.send("MISSING", {"filename": self.filename,
                                         "reason": f"{offset}+{length} is past the end"})
            return
        try:
            data = os.pread(self.file.fileno(), length, offset)
        except OSError as exc:
            self.socket.send("MISSING", {"filename": self.filename, "reason": str(exc)[:limits.REASON]})
            return
        if len(data) != length:
            self.socket.send("MISSING", {"filename": self.filename,
                                         "reason": "the file is shorter than offered"})
            return
        self.socket.send("CHUNK", {"filename": self.filename, "offset": offset,
                                   "data": data, "crc32": zlib.crc32(data)})
        self.chunks_sent += 1

    def reconnect(self) -> None:
        """A fresh connection (after the master went away): nothing is on offer."""
        self._close_file()
        self.socket.close()
        self.socket = self._connect()

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.filename, self.size = None, None, 0

    def close(self) -> None:
        self._close_file()
        self.socket.close()
