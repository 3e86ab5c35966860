"""A build's log and its failure reasons: what an operator reads of a build.

The log keeps the head and tail of what the build's commands printed, with
the slave's own lines (``--- piwheels: ...``); a failed build gets one line
for the master, from the signs in its output that a person can act on.
"""

from __future__ import annotations

import os
import select
import shlex
import threading
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from ..diagnosis import OUT_OF_MEMORY_REASON

#: Bytes read from the build's output at a time.
READ_BYTES = 64 * 1024
#: How often the reader of the build's output looks whether it should stop.
READ_POLL_S = 0.1
MiB = 1024 * 1024
#: The longest failure reason sent to the master (the protocol allows 500).
MAX_REASON_CHARS = 400
#: Text in a failed build's log that means it ran out of memory.
MEMORY_SIGNS = ("MemoryError", "out of memory", "Cannot allocate memory")
#: ... that it could not start another process (fork or clone failed with EAGAIN).
PID_SIGNS = ("Resource temporarily unavailable", "[Errno 11]", "fork: retry", "Cannot fork")
#: ... that it ran out of room.
DISK_SIGNS = ("No space left on device", "[Errno 28]", "Disk quota exceeded")
#: ... that it tried to reach the network.
NETWORK_SIGNS = ("Network is unreachable", "[Errno 101]", "Temporary failure in name resolution",
                 "Name or service not known", "[Errno -3]", "[Errno -2]", "Connection refused",
                 "[Errno 111]")
#: pip's words, offline, for a requirement the fetch phase did not get.
NOT_FETCHED_SIGN = "ERROR: No matching distribution found for"
#: How much of one command's output the failure reason is looked for in.
REASON_TAIL_BYTES = 512 * 1024


class BoundedLog:
    """The first and last bytes of a stream, with a marker saying how much was cut."""

    def __init__(self, max_bytes: int) -> None:
        self.head_limit = max(0, max_bytes) // 2
        self.tail_limit = max(0, max_bytes) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.cut_bytes = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            room = self.head_limit - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit + READ_BYTES:
                self._trim()

    def _trim(self) -> None:
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            del self.tail[:excess]
            self.cut_bytes += excess

    def text(self) -> str:
        with self._lock:
            self._trim()
            marker = f"\n[... {self.cut_bytes} bytes cut ...]\n" if self.cut_bytes else ""
            return (
                self.head.decode("utf-8", "replace") + marker + self.tail.decode("utf-8", "replace")
            )


def failure_reason(returncode: int, output: str, *, memory_bytes: int, pid_limit: int,
                   disk_bytes: int, contained: bool, fetched: list[str]) -> str:
    """One line for the master: pip's exit status and its most telling error."""
    reason = f"pip wheel failed with exit status {returncode}"
    tail = output[-256 * 1024:]
    lines = [line.strip() for line in tail.splitlines()]
    if memory_bytes > 0 and any(sign in tail for sign in MEMORY_SIGNS):
        return f"{reason}: {OUT_OF_MEMORY_REASON.format(limit_mib=memory_bytes // MiB)}"
    if pid_limit > 0 and any(sign in tail for sign in PID_SIGNS):
        return (f"{reason}: the build exceeded the PID limit "
                f"({pid_limit} processes)")
    if contained and any(sign in tail for sign in DISK_SIGNS):
        return (f"{reason}: disk quota of the build directory exceeded (the limit is "
                f"{disk_bytes // MiB} MiB)")
    # pip's own words when the sdist's metadata disagrees with the job
    # (the start of that line is a long URL)
    telling = [
        "the sdist " + line[line.index("has inconsistent"):]
        for line in lines if "has inconsistent" in line
    ]
    if contained and not telling:
        wanted = [line[len(NOT_FETCHED_SIGN):].strip() for line in lines
                  if line.startswith(NOT_FETCHED_SIGN)]
        if wanted or any(sign in tail for sign in NETWORK_SIGNS):
            asked = f": it asked for {wanted[0]}" if wanted else ""
            return clip(f"{reason}: network is not available during the build{asked} "
                        f"(the fetch phase got: {', '.join(fetched)})")
    telling += [line for line in lines if line.startswith("ERROR:")]
    if telling:
        reason = f"{reason}: {telling[0]}"
    return clip(reason)


def fetch_failure(returncode: int, output: str) -> str:
    """One line for the master when ``pip download`` of the build requirements failed."""
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    detail = f": {errors[0]}" if errors else ""
    return clip(f"fetch phase: pip download of the build requirements, as wheels only, "
                f"failed with exit status {returncode}{detail}")


def note(text: BoundedLog, line: str) -> None:
    """A line of the slave's own in the build log."""
    text.write(f"--- piwheels: {line}\n".encode("utf-8", "replace"))


def shown(command: list[str], index_url: str) -> str:
    """*command* for the log: the index URL without its password, bwrap's options folded."""
    shown = [redact_url(part) if part == index_url else part for part in command]
    if "--" in shown and shown[0].endswith("bwrap"):
        shown = ["bwrap", "[sandbox options]", *shown[shown.index("--") + 1:]]
    return shlex.join(shown)


# --- helpers -----------------------------------------------------------------


def pump(fd: int, logs: Iterable[BoundedLog], stop: threading.Event) -> None:
    """Copy the build's output into *logs* as it comes, so the pipe never fills."""
    while True:
        ready, _, _ = select.select([fd], [], [], READ_POLL_S)
        if ready:
            try:
                data = os.read(fd, READ_BYTES)
            except OSError:
                return
            if not data:
                return
            for text in logs:
                text.write(data)
        elif stop.is_set():
            return


def redact_url(url: str) -> str:
    """*url* without a password, for the log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def clip(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."
