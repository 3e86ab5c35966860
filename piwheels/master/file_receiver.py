"""file_receiver: pulls wheels from slaves in chunks and verifies them.

The slave driver says which files to EXPECT from which slave.  The slave
OFFERs a file; this task pulls it with FETCH requests, at most ``window``
chunks in flight, into a ``.part`` file under the output tree's transfers
directory (:class:`~piwheels.storage.OutputTree` names it).  A
chunk whose CRC-32 is wrong, or that does not come back in time, is fetched
again; a file whose SHA-256 is wrong is fetched again from the start.  Only a
complete file that passes :func:`~piwheels.wheel_facts.check_wheel` is
reported VERIFIED, under a name without ``.part``; the build recorder moves
it into the index.  Nothing half-received is ever visible there.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional

import zmq

from ..errors import WheelError
from ..protocols import FILE_TRANSFER, TRANSFER_REQUESTS, TRANSFER_RESULTS
from ..storage import OutputTree, remove_quietly
from ..wheel_facts import check_wheel
from .task import Clock, Task


@dataclass
class Expected:
    """A file the slave driver told us a slave will offer."""

    slave_id: int
    package: str
    version: str
    abi_tag: str
    platform_tag: str
    filename: str
    size: int
    sha256: str


@dataclass
class Transfer:
    """One file being pulled from one slave's file socket."""

    expected: Expected
    address: bytes
    path: Path
    handle: BinaryIO
    todo: list[int]
    in_flight: dict[int, float] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    attempts: int = 1
    received: int = 0
    #: SHA-256 of the file up to ``hashed``, kept while chunks arrive in order
    #: (None once one arrives out of order: the whole file is hashed at the end)
    digest: Optional["hashlib._Hash"] = field(default_factory=hashlib.sha256)
    hashed: int = 0


class FileReceiver(Task):
    name = "file_receiver"

    def __init__(self, ctx: zmq.Context, *, file_bind: str, output_path: Path,
                 chunk_size: int, window: int, timeout_s: float, retries: int,
                 max_wheel_size: int, clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.tree = OutputTree(output_path)
        self.chunk_size = chunk_size
        self.window = window
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_wheel_size = max_wheel_size
        self.expected: dict[tuple[int, str], Expected] = {}
        self.transfers: dict[bytes, Transfer] = {}
        #: verified files per slave, deleted if the slave driver abandons the build
        self.verified: dict[int, list[tuple[str, Path]]] = {}
        self.bytes_received = 0
        self.files_verified = 0
        self.files_rejected = 0
        self.chunks_refetched = 0
        self.router = self.socket(zmq.ROUTER, FILE_TRANSFER.reverse())
        self.router.bind(file_bind)
        self.register(self.router, self.handle_slave)
        self.requests = self.socket(zmq.PULL, TRANSFER_REQUESTS.reverse())
        self.requests.bind(TRANSFER_REQUESTS.address)
        # an OFFER must find the EXPECT the driver sent before telling the slave
        self.register(self.requests, self.handle_request, goes_first=True)
        self.results = self.socket(zmq.PUSH, TRANSFER_RESULTS)
        self.results.connect(TRANSFER_RESULTS.address)
        self.every(max(0.05, timeout_s / 4), self.check_timeouts)

    def on_start(self) -> None:
        """Whatever a previous run left half-done is worthless: start clean (the
        master's reconciliation has done so already, and logged it)."""
        self.tree.clear_transfers()

    def on_stop(self) -> None:
        for transfer in list(self.transfers.values()):
            self._discard(transfer)

    # --- requests from the slave driver -----------------------------------------

    def handle_request(self) -> None:
        msg = self.recv_or_log(self.requests)
        if msg is None:
            return
        name, payload = msg
        if name == "EXPECT":
            expected = Expected(**payload)
            self._forget_handed_over(expected)
            self.expected[(expected.slave_id, expected.filename)] = expected
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
        for transfer in [t for t in self.transfers.values() if t.expected.slave_id == slave_id]:
            self._discard(transfer)
        for _, path in self.verified.pop(slave_id, []):
            remove_quietly(path)

    # --- the file protocol ------------------------------------------------------------

    def handle_slave(self) -> None:
        address, name, payload = self.router.recv_from()
        if name is None:
            self.log.warning("dropped a bad file-transfer message: %s", payload)
            return
        if name == "OFFER":
            self.do_offer(address, payload)
            return
        transfer = self.transfers.get(address)
        if transfer is None or transfer.expected.filename != payload["filename"]:
            self.log.debug("dropped %s for %s: no such transfer", name, payload["filename"])
            return
        if name == "CHUNK":
            self.do_chunk(transfer, payload)
        else:
            self._fail(transfer, f"the slave could not send it: {payload['reason'] or 'missing'}")

    def do_offer(self, address: bytes, offer: dict) -> None:
        key = (offer["slave_id"], offer["filename"])
        expected = self.expected.get(key)
        if expected is None:
            self.log.warning("slave %d offered %s, which nobody expects", *key)
            self.router.send_to(address, "RECEIVED", {
                "filename": offer["filename"], "ok": False, "reason": "not expected"})
            return
        if (offer["size"], offer["sha256"]) != (expected.size, expected.sha256):
            del self.expected[key]
            self._reject(expected, address, "the offer disagrees with the reported size or hash")
            return
        old = self.transfers.get(address)
        if old is not None:
            self._discard(old)
        if expected.size > self.max_wheel_size:
            del self.expected[key]
            self._reject(expected, address,
                         f"{expected.size} bytes is over the limit of {self.max_wheel_size}")
            return
        del self.expected[key]
        self._start(expected, address, attempts=1)

    def _start(self, expected: Expected, address: bytes, *, attempts: int) -> None:
        path = self.tree.part_file(expected.slave_id, expected.filename)
        handle = open(path, "w+b")
        handle.truncate(expected.size)
        transfer = Transfer(expected=expected, address=address, path=path, handle=handle,
                            todo=list(range(0, expected.size, self.chunk_size)),
                            attempts=attempts)
        self.transfers[address] = transfer
        self.log.debug("receiving %s (%d bytes) from slave %d", expected.filename,
                       expected.size, expected.slave_id)
        self._fill_window(transfer)

    def _fill_window(self, transfer: Transfer) -> None:
        while transfer.todo and len(transfer.in_flight) < self.window:
            offset = transfer.todo.pop(0)
            self._fetch(transfer, offset)

    def _fetch(self, transfer: Transfer, offset: int) -> None:
        length = min(self.chunk_size, transfer.expected.size - offset)
        transfer.in_flight[offset] = self.clock()
        if not self.router.send_to(transfer.address, "FETCH", {
                "filename": transfer.expected.filename, "offset": offset, "length": length}):
            pass  # the slave's socket is gone for now; the timeout asks again

    def do_chunk(self, transfer: Transfer, chunk: dict) -> None:
        offset, data = chunk["offset"], chunk["data"]
        if offset not in transfer.in_flight:
            return  # a late duplicate of a chunk fetched twice
        length = min(self.chunk_size, transfer.expected.size - offset)
        if len(data) != length or zlib.crc32(data) != chunk["crc32"]:
            self.chunks_refetched += 1
            if not self._count_try(transfer, offset, "damaged"):
                return
            self._fetch(transfer, offset)
            return
        del transfer.in_flight[offset]
        os.pwrite(transfer.handle.fileno(), data, offset)
        if transfer.digest is not None:
            if offset == transfer.hashed:
                transfer.digest.update(data)
                transfer.hashed += len(data)
            else:
                transfer.digest = None
        transfer.received += len(data)
        self.bytes_received += len(data)
        if transfer.todo:
            self._fill_window(transfer)
        elif not transfer.in_flight:
            self._complete(transfer)

    def _count_try(self, transfer: Transfer, offset: int, why: str) -> bool:
        """Count another fetch of one chunk; False (and the transfer failed) if too many."""
        tries = transfer.tries.get(offset, 0) + 1
        transfer.tries[offset] = tries
        if tries > self.retries:
            self._fail(transfer, f"chunk at {offset} {why} {tries} times")
            return False
        return True

    def _complete(self, transfer: Transfer) -> None:
        transfer.handle.close()
        del self.transfers[transfer.address]
        expected = transfer.expected
        try:
            check_wheel(
                transfer.path, package=expected.package, version=expected.version,
                expected_size=expected.size, expected_sha256=expected.sha256,
                builder_abi=expected.abi_tag, builder_platform=expected.platform_tag,
                max_size=self.max_wheel_size, filename=expected.filename,
                sha256=transfer.digest.hexdigest() if transfer.digest is not None else None)
        except WheelError as exc:
            remove_quietly(transfer.path)
            if "SHA-256" in str(exc) and transfer.attempts <= self.retries:
                self.log.warning("%s arrived damaged; fetching it again", expected.filename)
                self._start(expected, transfer.address, attempts=transfer.attempts + 1)
                return
            self._reject(expected, transfer.address, str(exc))
            return
        final = self.tree.received(transfer.path)
        os.replace(transfer.path, final)
        self.verified.setdefault(expected.slave_id, []).append(
            (f"{expected.package}\0{expected.version}", final))
        self.files_verified += 1
        self.log.info("received %s from slave %d", expected.filename, expected.slave_id)
        # the driver hears first, so the slave's SENT finds the verdict there
        self.tell(self.results, "VERIFIED", {"slave_id": expected.slave_id,
                                       "filename": expected.filename, "path": str(final)})
        self.router.send_to(transfer.address, "RECEIVED", {
            "filename": expected.filename, "ok": True, "reason": None})

    def _fail(self, transfer: Transfer, reason: str) -> None:
        self._discard(transfer)
        self._reject(transfer.expected, transfer.address, reason)

    def _reject(self, expected: Expected, address: bytes, reason: str) -> None:
        self.files_rejected += 1
        self.log.warning("rejected %s from slave %d: %s", expected.filename,
                         expected.slave_id, reason)
        self.tell(self.results, "REJECTED", {"slave_id": expected.slave_id,
                                       "filename": expected.filename, "reason": reason[:500]})
        self.router.send_to(address, "RECEIVED", {
            "filename": expected.filename, "ok": False, "reason": reason[:500]})

    def _discard(self, transfer: Transfer) -> None:
        self.transfers.pop(transfer.address, None)
        if not transfer.handle.closed:
            transfer.handle.close()
        remove_quietly(transfer.path)

    def check_timeouts(self) -> None:
        now = self.clock()
        for transfer in list(self.transfers.values()):
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
            "expected": len(self.expected),
            "bytes_received": self.bytes_received,
            "files_verified": self.files_verified,
            "files_rejected": self.files_rejected,
            "chunks_refetched": self.chunks_refetched,
        }
