"""The whole-wheel check of a file the file receiver is receiving, in a thread of its own.

The check (:func:`~piwheels.wheel_facts.check_wheel`: the zip, every RECORD
hash, METADATA) starts as soon as the transfer does and reads the ``.part``
file as it grows: a read waits until the chunks it asks for are written
(:class:`Arrivals`), so it keeps a chunk or two behind the transfer, and
little is left to check when the last chunk arrives.  It never runs on the
file receiver's thread, which goes on serving the other transfers.  When it
is done it says so with CHECKED on :data:`~piwheels.protocols.WHEEL_CHECKS`;
the receiver acts on it only once the whole file is in and its SHA-256 is the
claimed one, so every byte the check read is the file's final byte.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Callable, Optional

import zmq

from .. import limits
from ..errors import WheelError
from ..protocols import WHEEL_CHECKS, WheelFacts
from ..transport import Socket


class Abandoned(Exception):
    """The transfer ended before the bytes a check waited for arrived."""


class Arrivals:
    """Which chunks of one ``.part`` file are written; a check's reads wait on it."""

    def __init__(self, size: int, chunk_size: int) -> None:
        self.size = size
        self.chunk_size = chunk_size
        self._written = bytearray(-(-size // chunk_size))
        self._changed = threading.Condition()
        self._closed = False

    def wrote(self, offset: int) -> None:
        """The chunk at *offset* is on disk (called by the receiver after its pwrite)."""
        with self._changed:
            self._written[offset // self.chunk_size] = 1
            self._changed.notify_all()

    def close(self) -> None:
        """The transfer is over (failed, or started again): waiting reads give up."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait(self, start: int, end: int) -> None:
        """Return once bytes *start* to *end* are written; :class:`Abandoned` if they never will."""
        if end <= start:
            return
        first, last = start // self.chunk_size, (end - 1) // self.chunk_size + 1
        with self._changed:
            while 0 in self._written[first:last]:
                if self._closed:
                    raise Abandoned
                self._changed.wait()


class GrowingFile(io.RawIOBase):
    """A read-only view of a file that is still being written: each read waits for its bytes.

    The file's size is the declared one (the ``.part`` file has it from the start).
    """

    def __init__(self, fd: int, arrivals: Arrivals) -> None:
        super().__init__()
        self._fd = fd
        self._arrivals = arrivals
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._arrivals.size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self._arrivals.size)
        if end <= self._pos:
            return 0
        self._arrivals.wait(self._pos, end)
        count = os.preadv(self._fd, [view[:end - self._pos]], self._pos)
        self._pos += count
        return count

    def read(self, size: int = -1) -> bytes:
        end = self._arrivals.size if size is None or size < 0 else self._pos + size
        end = min(end, self._arrivals.size)
        if end <= self._pos:
            return b""
        self._arrivals.wait(self._pos, end)
        data = os.pread(self._fd, end - self._pos, self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class WheelCheck(threading.Thread):
    """Runs *check* on a growing file, then reports CHECKED (check id, facts or reason)."""

    def __init__(self, ctx: zmq.Context, check_id: int, fd: int, arrivals: Arrivals,
                 check: Callable[[GrowingFile], WheelFacts]) -> None:
        super().__init__(name=f"wheel-check-{check_id}", daemon=True)
        self.ctx = ctx
        self.check_id = check_id
        self.file = GrowingFile(fd, arrivals)
        self.check = check

    def run(self) -> None:
        facts: Optional[WheelFacts] = None
        reason: Optional[str] = None
        try:
            with self.file:
                facts = self.check(self.file)
        except Abandoned:
            return  # the receiver has forgotten this check
        except WheelError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"cannot read it back: {exc.strerror or exc}"
        sock = Socket.make(self.ctx, zmq.PUSH, WHEEL_CHECKS, linger_ms=1000)
        try:
            sock.connect(WHEEL_CHECKS.address)
            sock.send("CHECKED", {"check_id": self.check_id,
                                  "facts": facts.to_dict() if facts is not None else None,
                                  "reason": reason and reason[:limits.REASON]},
                      flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the receiver has stopped: nothing waits for this
        finally:
            sock.zsocket.close(linger=1000)  # the message is on its way, not dropped
