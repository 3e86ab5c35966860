"""file_receiver: pulls wheels from slaves in chunks and verifies them.

The slave driver says which files to EXPECT from which slave.  The slave
OFFERs a file; this task pulls it with FETCH requests, at most ``window``
chunks in flight, into a ``.part`` file under the output tree's transfers
directory (:class:`~piwheels.storage.OutputTree` names it), written with
``pwrite`` straight from the received frame.  A chunk whose CRC-32 is wrong,
or that does not come back in time, is fetched again.  The SHA-256 is taken
as the chunks arrive, in order (one that comes early waits, its frame kept
or read back later, until the bytes before it are in); a file whose SHA-256
is wrong is fetched again from the start.  The whole-wheel check
(:func:`~piwheels.wheel_facts.check_wheel`) runs beside the transfer in a
thread of its own (:mod:`.wheel_check`), reading the file as it grows: the
last chunk, which holds the zip's directory, is fetched first.  Only a
complete file with the claimed SHA-256 that passes the check is reported
VERIFIED, under a name without ``.part``, with the facts computed from it
(they, not what BUILT claimed, are recorded and published; a claim that
disagrees with them rejects the file, naming the fact); the build recorder
moves it into the index.  Nothing half-received is ever visible there.

What a transfer may take is bounded: a file is accepted only if the disk has
room for its declared size (else it is refused, new builds are held until the
room is there, and the build goes back to the queue); a disk that fills up
while writing fails only that transfer; and every transfer has an overall
deadline, so a sender that trickles cannot hold a build for long.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import itertools
import logging
import os
import shutil
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional

import zmq

from .. import limits
from ..errors import WheelError
from ..protocols import (
    DRIVER_COMMANDS, ENVELOPE_BYTES, FILE_TRANSFER, TRANSFER_REQUESTS, TRANSFER_RESULTS,
    WHEEL_CHECKS, WheelFacts,
)
from ..storage import OutputTree, remove_quietly
from ..transport import CurveServer, PeerLimits, PeerRefused
from ..wheel_facts import UnpackLimits, check_sha256, check_wheel, offer_disagrees
from .task import Clock, Task
from .wheel_check import Arrivals, GrowingFile, WheelCheck

#: the driver's hold while the transfers directory has no room for a declared file
SPACE_HOLD = "no disk space for a transfer"
#: seconds between looks at the free space while that hold is set
SPACE_CHECK_S = 2.0
#: seconds the receiver waits for its check threads when it stops
CHECK_STOP_S = 5.0


@dataclass
class Expected:
    """A file the slave driver told us a slave will offer: who builds what on
    which tags, and the facts it claimed for the file in BUILT."""

    slave_id: int
    package: str
    version: str
    builder_abi: str
    builder_platform: str
    #: every platform its interpreter accepts (its own first): a wheel may carry any
    builder_platforms: tuple[str, ...]
    #: the slave's key: the file must come from a connection with the same key
    key_id: Optional[str]
    claimed: WheelFacts

    @classmethod
    def from_message(cls, expect: dict) -> "Expected":
        return cls(**{**expect, "claimed": WheelFacts.from_dict(expect["claimed"]),
                      "builder_platforms": tuple(expect["builder_platforms"])})


@dataclass
class Transfer:
    """One file being pulled from one slave's file socket, and checked meanwhile."""

    expected: Expected
    address: bytes
    path: Path
    handle: BinaryIO
    todo: deque[int]
    #: which chunks are on disk, for the check's reads
    arrivals: Arrivals
    check_id: int
    in_flight: dict[int, float] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    attempts: int = 1
    #: when the first attempt started (the deadline covers them all)
    started_s: float = 0.0
    received: int = 0
    #: SHA-256 of the file's first ``hashed`` bytes
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    hashed: int = 0
    #: chunks on disk past ``hashed``: their frames, or None (to be read back)
    ahead: dict[int, Optional[memoryview]] = field(default_factory=dict)
    #: bytes of frames kept in ``ahead``
    held: int = 0
    check: Optional[WheelCheck] = None
    #: every chunk is on disk and the SHA-256 is the claimed one
    complete: bool = False
    #: the check's outcome, once CHECKED came: the facts, or why the file is refused
    verdict: Optional[tuple[Optional[WheelFacts], Optional[str]]] = None


class FileReceiver(Task):
    name = "file_receiver"

    def __init__(self, ctx: zmq.Context, *, file_bind: str, output_path: Path,
                 chunk_size: int, window: int, timeout_s: float, retries: int,
                 max_wheel_size: int, deadline_s: float, unpack_limits: UnpackLimits,
                 peers: Optional[PeerLimits] = None, curve: Optional[CurveServer] = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.tree = OutputTree(output_path)
        self.chunk_size = chunk_size
        self.window = window
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_wheel_size = max_wheel_size
        self.deadline_s = deadline_s
        self.unpack_limits = unpack_limits
        #: bytes that must be free under .transfers before the space hold is released
        self.space_needed: Optional[int] = None
        self.expected: dict[tuple[int, str], Expected] = {}
        self.transfers: dict[bytes, Transfer] = {}
        #: every transfer whose check may still report, under its check id
        self.checks: dict[int, Transfer] = {}
        self.check_ids = itertools.count(1)
        #: verified files per slave, deleted if the slave driver abandons the build
        self.verified: dict[int, list[tuple[str, Path]]] = {}
        self.bytes_received = 0
        self.files_verified = 0
        self.files_rejected = 0
        self.chunks_refetched = 0
        # no valid frame is larger than one chunk; a slave has at most a
        # window of chunks (and an OFFER) in flight
        if peers is not None:
            peers = dataclasses.replace(peers, queue=window + 4)
        self.router = self.socket(zmq.ROUTER, FILE_TRANSFER.reverse(),
                                  max_frame=max(chunk_size, ENVELOPE_BYTES), peers=peers,
                                  curve_server=curve)
        self.router.bind(file_bind)
        self.register(self.router, self.handle_slave)
        self.requests = self.socket(zmq.PULL, TRANSFER_REQUESTS.reverse())
        self.requests.bind(TRANSFER_REQUESTS.address)
        # an OFFER must find the EXPECT the driver sent before telling the slave
        self.register(self.requests, self.handle_request, goes_first=True)
        self.results = self.socket(zmq.PUSH, TRANSFER_RESULTS)
        self.results.connect(TRANSFER_RESULTS.address)
        self.driver = self.socket(zmq.PUSH, DRIVER_COMMANDS)
        self.driver.connect(DRIVER_COMMANDS.address)
        self.checked = self.socket(zmq.PULL, WHEEL_CHECKS.reverse())
        self.checked.bind(WHEEL_CHECKS.address)
        self.register(self.checked, self.handle_checked)
        self.every(max(0.05, min(timeout_s, deadline_s) / 4), self.check_timeouts)
        self.every(SPACE_CHECK_S, self.check_space)

    def on_start(self) -> None:
        """Whatever a previous run left half-done is worthless: start clean (the
        master's reconciliation has done so already, and logged it)."""
        self.tree.clear_transfers()

    def on_stop(self) -> None:
        checks = [t.check for t in self.checks.values() if t.check is not None]
        for transfer in list(self.checks.values()):
            self._discard(transfer)
        deadline = time.monotonic() + CHECK_STOP_S
        for check in checks:  # each stops at its next read; none outlives the task
            check.join(max(0.0, deadline - time.monotonic()))

    # --- requests from the slave driver -----------------------------------------

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "EXPECT":
            expected = Expected.from_message(payload)
            self._forget_handed_over(expected)
            self.expected[(expected.slave_id, expected.claimed.filename)] = expected
        else:
            self.abandon(payload["slave_id"])

    def _forget_handed_over(self, expected: Expected) -> None:
        """Files verified for an earlier build of this slave now belong to the recorder."""
        earlier = self.verified.get(expected.slave_id, [])
        if earlier and earlier[0][0] != f"{expected.package}\0{expected.version}":
            del self.verified[expected.slave_id]

    def abandon(self, slave_id: int) -> None:
        """The slave driver gave up on this slave's build: drop its files."""
        for key in [key for key in self.expected if key[0] == slave_id]:
            del self.expected[key]
        # every transfer, under way or waiting for its check, is in self.checks
        for transfer in [t for t in self.checks.values() if t.expected.slave_id == slave_id]:
            self._discard(transfer)
        for _, path in self.verified.pop(slave_id, []):
            remove_quietly(path)

    # --- the file protocol ------------------------------------------------------------

    def handle_slave(self) -> None:
        address, name, payload, key_id = self.router.recv_from_peer()
        if isinstance(payload, PeerRefused):
            self.log_limited("refused-key", logging.WARNING,
                             "refused a file-transfer message: %s", payload)
            transfer = self.transfers.get(address)
            if transfer is not None:
                self._fail(transfer, f"the sender was refused: {payload}", retry=True)
            return
        if name is None:
            self.log.warning("dropped a bad file-transfer message: %s", payload)
            return
        if name == "OFFER":
            self.do_offer(address, payload, key_id)
            return
        transfer = self.transfers.get(address)
        if transfer is None or transfer.expected.claimed.filename != payload["filename"]:
            self.log.debug("dropped %s for %s: no such transfer", name, payload["filename"])
            return
        if name == "CHUNK":
            self.do_chunk(transfer, payload)
        else:
            self._fail(transfer, f"the slave could not send it: {payload['reason'] or 'missing'}")

    def do_offer(self, address: bytes, offer: dict, key_id: Optional[str] = None) -> None:
        key = (offer["slave_id"], offer["filename"])
        expected = self.expected.get(key)
        if expected is not None and expected.key_id != key_id:
            # another enrolled slave (or none) speaking for this one: not its file to give
            self.log_limited("offer-key", logging.WARNING,
                             "slave %d's %s offered by key %s, not the slave's key %s",
                             *key, key_id or "none", expected.key_id or "none")
            expected = None
        if expected is None:
            self.log_limited("unexpected-offer", logging.WARNING,
                             "slave %d offered %s, which nobody expects", *key)
            self.router.send_to(address, "RECEIVED", {
                "filename": offer["filename"], "ok": False, "reason": "not expected"})
            return
        for fact in ("size", "sha256"):
            if offer[fact] != getattr(expected.claimed, fact):
                del self.expected[key]
                self._reject(expected, address, offer_disagrees(fact, offer[fact],
                                                                getattr(expected.claimed, fact)))
                return
        old = self.transfers.get(address)
        if old is not None:
            self._discard(old)
        if expected.claimed.size > self.max_wheel_size:
            del self.expected[key]
            self._reject(expected, address,
                         f"{expected.claimed.size} bytes is over the limit of "
                         f"{self.max_wheel_size}")
            return
        del self.expected[key]
        free = self._free_bytes()
        if free is not None:
            # the .part files are sparse: what the others still write is not counted yet
            free -= sum(t.expected.claimed.size - t.received for t in self.transfers.values())
        if free is not None and free < expected.claimed.size:
            self._hold_for_space(expected.claimed.size)
            self._reject(expected, address,
                         f"no room: {expected.claimed.size} bytes declared, {free} free under "
                         f"{self.tree.transfers}", retry=True)
            return
        self._start(expected, address, attempts=1, started_s=self.clock())

    def _start(self, expected: Expected, address: bytes, *, attempts: int,
               started_s: float) -> None:
        size = expected.claimed.size
        path = self.tree.part_file(expected.slave_id, expected.claimed.filename)
        try:
            handle = open(path, "w+b")
        except OSError as exc:
            self._reject(expected, address, f"cannot store it: {exc.strerror}", retry=True)
            return
        try:
            handle.truncate(size)
            check_fd = os.open(path, os.O_RDONLY)  # the check's own (it closes it)
        except OSError as exc:
            handle.close()
            remove_quietly(path)
            self._disk_failed(expected, address, exc)
            return
        offsets = list(range(0, size, self.chunk_size))
        transfer = Transfer(expected=expected, address=address, path=path, handle=handle,
                            # the last chunk first: it holds the zip's directory,
                            # which the check reads before anything else
                            todo=deque(offsets[-1:] + offsets[:-1]),
                            arrivals=Arrivals(size, self.chunk_size),
                            check_id=next(self.check_ids), attempts=attempts,
                            started_s=started_s)
        self.transfers[address] = transfer
        self.checks[transfer.check_id] = transfer
        transfer.check = WheelCheck(self.ctx, transfer.check_id, check_fd, transfer.arrivals,
                                    functools.partial(self._check, expected, path))
        transfer.check.start()
        self.log.debug("receiving %s (%d bytes) from slave %d", expected.claimed.filename,
                       size, expected.slave_id)
        self._fill_window(transfer)

    def _check(self, expected: Expected, path: Path, source: GrowingFile) -> WheelFacts:
        """The whole-wheel check, run in the transfer's check thread (pure: it reads
        only what never changes).  The SHA-256 is the receiver's to check."""
        return check_wheel(
            path, package=expected.package, version=expected.version,
            claimed=expected.claimed, builder_abi=expected.builder_abi,
            builder_platform=expected.builder_platform,
            builder_platforms=expected.builder_platforms, max_size=self.max_wheel_size,
            filename=expected.claimed.filename, sha256=expected.claimed.sha256,
            unpack=self.unpack_limits, source=source)

    def _fill_window(self, transfer: Transfer) -> None:
        while transfer.todo and len(transfer.in_flight) < self.window:
            self._fetch(transfer, transfer.todo.popleft())

    def _fetch(self, transfer: Transfer, offset: int) -> None:
        length = min(self.chunk_size, transfer.expected.claimed.size - offset)
        transfer.in_flight[offset] = self.clock()
        if not self.router.send_to(transfer.address, "FETCH", {
                "filename": transfer.expected.claimed.filename, "offset": offset,
                "length": length}):
            pass  # the slave's socket is gone for now; the timeout asks again

    def do_chunk(self, transfer: Transfer, chunk: dict) -> None:
        offset, data = chunk["offset"], chunk["data"]
        if offset not in transfer.in_flight:
            return  # a late duplicate of a chunk fetched twice
        length = min(self.chunk_size, transfer.expected.claimed.size - offset)
        if len(data) != length or zlib.crc32(data) != chunk["crc32"]:
            self.chunks_refetched += 1
            if not self._count_try(transfer, offset, "damaged"):
                return
            self._fetch(transfer, offset)
            return
        del transfer.in_flight[offset]
        try:
            # straight from the frame's buffer (a memoryview): no copy in Python
            written = os.pwrite(transfer.handle.fileno(), data, offset)
            if written != len(data):  # only a full disk writes less than asked
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            transfer.arrivals.wrote(offset)
            self._hash_along(transfer, offset, data)
        except OSError as exc:
            self._discard(transfer)
            self._disk_failed(transfer.expected, transfer.address, exc)
            return
        transfer.received += len(data)
        self.bytes_received += len(data)
        if transfer.todo:
            self._fill_window(transfer)
        elif not transfer.in_flight:
            self._complete(transfer)

    def _hash_along(self, transfer: Transfer, offset: int, data: memoryview) -> None:
        """Hash the file's bytes in order as they arrive: a chunk that comes early
        waits (its frame kept, up to a window of them; else read back from disk)
        until the bytes before it are hashed."""
        if offset != transfer.hashed:
            keep = transfer.held + len(data) <= self.window * self.chunk_size
            transfer.ahead[offset] = data if keep else None
            transfer.held += len(data) if keep else 0
            return
        transfer.digest.update(data)
        transfer.hashed += len(data)
        while transfer.hashed in transfer.ahead:
            kept = transfer.ahead.pop(transfer.hashed)
            if kept is None:
                length = min(self.chunk_size, transfer.expected.claimed.size - transfer.hashed)
                kept = os.pread(transfer.handle.fileno(), length, transfer.hashed)
                if len(kept) != length:
                    raise OSError(errno.EIO, "a chunk written was not there to read back")
            else:
                transfer.held -= len(kept)
            transfer.digest.update(kept)
            transfer.hashed += len(kept)

    def _count_try(self, transfer: Transfer, offset: int, why: str) -> bool:
        """Count another fetch of one chunk; False (and the transfer failed) if too many."""
        tries = transfer.tries.get(offset, 0) + 1
        transfer.tries[offset] = tries
        if tries > self.retries:
            self._fail(transfer, f"chunk at {offset} {why} {tries} times")
            return False
        return True

    def _complete(self, transfer: Transfer) -> None:
        """Every chunk is on disk: hold its SHA-256 against the claim, then wait
        for the check (if it has not finished already)."""
        transfer.handle.close()
        del self.transfers[transfer.address]
        expected = transfer.expected
        try:
            check_sha256(expected.claimed, transfer.digest.hexdigest())
        except WheelError as exc:
            self._discard(transfer)
            if transfer.attempts <= self.retries:
                self.log.warning("%s arrived damaged; fetching it again",
                                 expected.claimed.filename)
                self._start(expected, transfer.address, attempts=transfer.attempts + 1,
                            started_s=transfer.started_s)
                return
            self._reject(expected, transfer.address, str(exc))
            return
        transfer.complete = True
        if transfer.verdict is not None:
            self._finish(transfer)

    def handle_checked(self) -> None:
        msg = self.recv_or_log(self.checked)
        if msg is None:
            return
        _, checked = msg
        transfer = self.checks.get(checked["check_id"])
        if transfer is None:
            return  # its transfer was discarded meanwhile
        facts = checked["facts"]
        transfer.verdict = (WheelFacts.from_dict(facts) if facts is not None else None,
                            checked["reason"])
        if transfer.complete:
            self._finish(transfer)

    def _finish(self, transfer: Transfer) -> None:
        """The file is whole, its hash the claimed one, and its check done: the verdict."""
        del self.checks[transfer.check_id]
        expected = transfer.expected
        facts, reason = transfer.verdict
        if facts is None:
            remove_quietly(transfer.path)
            self._reject(expected, transfer.address, reason or "the check failed")
            return
        final = self.tree.received(transfer.path)
        try:
            os.replace(transfer.path, final)
        except OSError as exc:
            remove_quietly(transfer.path)
            self._disk_failed(expected, transfer.address, exc)
            return
        self.verified.setdefault(expected.slave_id, []).append(
            (f"{expected.package}\0{expected.version}", final))
        self.files_verified += 1
        self.log.info("received %s from slave %d", expected.claimed.filename, expected.slave_id)
        # the driver hears first, so the slave's SENT finds the verdict there
        self.tell(self.results, "VERIFIED", {"slave_id": expected.slave_id,
                                             "file": {**facts.to_dict(), "path": str(final)}})
        self.router.send_to(transfer.address, "RECEIVED", {
            "filename": expected.claimed.filename, "ok": True, "reason": None})

    def _fail(self, transfer: Transfer, reason: str, *, retry: bool = False) -> None:
        self._discard(transfer)
        self._reject(transfer.expected, transfer.address, reason, retry=retry)

    def _disk_failed(self, expected: Expected, address: bytes, exc: OSError) -> None:
        """Writing failed (a full disk, most likely): not the wheel's fault."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._hold_for_space(expected.claimed.size)
        self._reject(expected, address, f"cannot store it: {exc.strerror or exc}", retry=True)

    def _reject(self, expected: Expected, address: bytes, reason: str, *,
                retry: bool = False) -> None:
        """Refuse a file; *retry*: its build goes back to the queue, unrecorded."""
        self.files_rejected += 1
        self.log.warning("%s %s from slave %d: %s", "refused (to be built again)" if retry
                         else "rejected", expected.claimed.filename, expected.slave_id, reason)
        self.tell(self.results, "REJECTED", {"slave_id": expected.slave_id,
                                             "filename": expected.claimed.filename,
                                             "reason": reason[:limits.REASON], "retry": retry})
        self.router.send_to(address, "RECEIVED", {
            "filename": expected.claimed.filename, "ok": False, "reason": reason[:limits.REASON]})

    def _discard(self, transfer: Transfer) -> None:
        """Forget a transfer (under way or waiting for its check), its check and its file."""
        if self.transfers.get(transfer.address) is transfer:
            del self.transfers[transfer.address]
        self.checks.pop(transfer.check_id, None)
        transfer.arrivals.close()  # a check waiting for bytes gives up
        if not transfer.handle.closed:
            transfer.handle.close()
        remove_quietly(transfer.path)

    # --- disk space -------------------------------------------------------------------

    def _free_bytes(self) -> Optional[int]:
        try:
            return shutil.disk_usage(self.tree.transfers).free
        except OSError:
            return None

    def _hold_for_space(self, size: int) -> None:
        """Hold new builds until *size* bytes (the most any refused file wanted) are free."""
        if self.space_needed is None:
            self.log.warning("holding new builds: %s (%d bytes wanted)", SPACE_HOLD, size)
            self.tell(self.driver, "HOLD", {"reason": SPACE_HOLD})
        self.space_needed = max(size, self.space_needed or 0)

    def check_space(self) -> None:
        if self.space_needed is None:
            return
        free = self._free_bytes()
        if free is not None and free >= self.space_needed:
            self.log.info("%d bytes free again: releasing the hold on new builds", free)
            self.space_needed = None
            self.tell(self.driver, "RELEASE", {"reason": SPACE_HOLD})

    # --- timers -----------------------------------------------------------------------

    def check_timeouts(self) -> None:
        now = self.clock()
        for transfer in list(self.transfers.values()):
            if now - transfer.started_s > self.deadline_s:
                self._fail(transfer, f"not received within the deadline of "
                                     f"{self.deadline_s:g} s ({transfer.received} of "
                                     f"{transfer.expected.claimed.size} bytes)", retry=True)
                continue
            late = [offset for offset, sent in transfer.in_flight.items()
                    if now - sent > self.timeout_s]
            for offset in late:
                self.chunks_refetched += 1
                if not self._count_try(transfer, offset, "timed out"):
                    break
                self._fetch(transfer, offset)

    def status(self) -> dict:
        return {
            "transfers": len(self.transfers),
            "checking": len(self.checks) - len(self.transfers),
            "expected": len(self.expected),
            "bytes_received": self.bytes_received,
            "files_verified": self.files_verified,
            "files_rejected": self.files_rejected,
            "chunks_refetched": self.chunks_refetched,
            "space_needed": self.space_needed,
        }
