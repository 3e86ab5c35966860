"""slave_driver: the master's side of the slave protocol.

It greets slaves, hands each idle one the next build for its target (its
interpreter's ABI on its platform, from HELLO; never another's), follows it
through BUILT and the file transfers, and hands the finished attempt to the
build recorder.  An idle slave with nothing to build is parked, unanswered,
until a job for it arrives (:mod:`.parking`).  Which job comes next is
:mod:`.job_book`'s to say; a failed attempt is retried once, by another
builder first (:mod:`.retries`).  Nothing slow happens
here: no database, no disk; every reply goes out at once.  A slave silent for
longer than its liveness allows is dropped and its build goes back to the
queue.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, Optional

import zmq

from .. import limits
from ..protocols import (
    BUILD_QUEUE, DRIVER_COMMANDS, PROTOCOL_VERSION, QUEUE_REQUESTS, RECORD_REQUESTS, SLAVE,
    TRANSFER_REQUESTS, TRANSFER_RESULTS,
)
from ..tags import Target, deterministic
from ..transport import CurveServer, PeerLimits, PeerRefused
from ..upstream_wheels import Skip
from .job_book import JobBook
from .job_queue import Job
from .parking import Parking
from .retries import failure_cause
from .skips import SkipVerdicts
from .slave_checks import built_files_problem, hello_problem
from .slave_state import Attempt, SlaveState, SlaveStatus
from .task import STATUS_INTERVAL_S, Clock, Task


#: Finished attempts queued for the build recorder before new builds wait for it.
RECORD_BACKLOG = 2000
#: How often attempts the build recorder could not take are offered again.
RECORD_RETRY_S = 0.05
#: How long a stopping driver waits for the recorder to take what it holds.
STOP_FLUSH_S = 5.0
#: The hold shown to monitors while the recorder is behind.
RECORDER_BEHIND = "recorder behind"
#: How often per heartbeat the driver looks for parked slaves to answer.
PARK_CHECKS_PER_HEARTBEAT = 4


class SlaveDriver(Task):
    name = "slave_driver"

    def __init__(self, ctx: zmq.Context, *, slave_bind: str, index_url: str,
                 heartbeat_s: float, liveness: int, sleep_s: float, retry_delay_s: float,
                 containment_required: bool,
                 record_backlog: int = RECORD_BACKLOG, peers: Optional[PeerLimits] = None,
                 curve: Optional[CurveServer] = None,
                 clock: Clock = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.containment_required = containment_required
        #: every target the farm knows, as build_queue last said, with the OS
        #: release it is pinned to (None: any): a slave without an enrolled key
        #: may not add one, and a pinned one takes only slaves of its release
        self.known_targets: dict[Target, Optional[str]] = {}
        self.index_url = index_url
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.sleep_s = sleep_s
        self.wall_clock = wall_clock
        self.slaves: dict[bytes, SlaveState] = {}
        self.slaves_by_id: dict[int, SlaveState] = {}
        self.book = JobBook(retry_delay_s)
        #: releases a slave need not build (Requires-Python, upstream's wheels)
        self.skips = SkipVerdicts()
        #: idle slaves waiting for a job, answered within a heartbeat
        self.parking = Parking(park_s=heartbeat_s)
        self.builds_handed_out = 0
        self.holds: set[str] = set()  # reasons not to hand out builds (paused, disk full)
        #: finished attempts the recorder has not taken yet (it is behind): new
        #: builds wait until it catches up, rather than this task blocking
        self.unrecorded: deque[dict] = deque()
        self._next_id = 1

        self.router = self.socket(zmq.ROUTER, SLAVE.reverse(), peers=peers, curve_server=curve)
        self.router.bind(slave_bind)
        self.slave_port = int(
            self.router.zsocket.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        self.queue_in = self.socket(zmq.PULL, BUILD_QUEUE.reverse())
        self.queue_in.bind(BUILD_QUEUE.address)
        self.transfer_results = self.socket(zmq.PULL, TRANSFER_RESULTS.reverse())
        self.transfer_results.bind(TRANSFER_RESULTS.address)
        self.transfer_requests = self.socket(zmq.PUSH, TRANSFER_REQUESTS)
        self.transfer_requests.connect(TRANSFER_REQUESTS.address)
        self.record_requests = self.socket(zmq.PUSH, RECORD_REQUESTS, hwm=record_backlog)
        self.record_requests.connect(RECORD_REQUESTS.address)
        self.queue_requests = self.socket(zmq.PUSH, QUEUE_REQUESTS)
        self.queue_requests.connect(QUEUE_REQUESTS.address)
        self.commands = self.socket(zmq.PULL, DRIVER_COMMANDS.reverse())
        self.commands.bind(DRIVER_COMMANDS.address)
        self.every(STATUS_INTERVAL_S, self.report_slaves)
        # what other tasks said goes before the slaves' messages: a SENT must
        # find its file's verdict waiting, an IDLE the QUEUE sent before it
        self.register(self.commands, self.handle_command, goes_first=True)
        self.register(self.transfer_results, self.handle_transfer_result, goes_first=True)
        self.register(self.queue_in, self.handle_queue, goes_first=True)
        self.register(self.router, self.handle_slave)
        self.every(min(1.0, heartbeat_s), self.expire_slaves)
        self.every(RECORD_RETRY_S, self.flush_records)
        self.every(heartbeat_s / PARK_CHECKS_PER_HEARTBEAT, self.answer_parked)
        self.handlers = {
            "IDLE": self.do_idle,
            "BUSY": self.do_busy,
            "BUILT": self.do_built,
            "SENT": self.do_sent,
            "BYE": self.do_bye,
        }

    # --- inputs from other tasks ------------------------------------------------

    def handle_queue(self) -> None:
        msg = self.recv_or_log(self.queue_in)
        if msg is None:
            return
        name, payload = msg
        if name in ("QUEUE", "EXTEND", "REPLACE"):
            target, sent = Target(payload["abi_tag"], payload["platform_tag"]), payload["builds"]
            kept = self.book.take_page(name, target, sent, self.clock(), self.wall_clock())
            self.skips.learn(sent)
            if name != "EXTEND":
                self.skips.keep_only(lambda job: any(
                    job in queue for queue in self.book.queues.values()))
            self.log.debug("%s: %d of %d builds for %s kept (the rest are building or just built)",
                           name, kept, len(sent), target)
            self._offer_parked([target])
        elif name == "REQUEUE":
            self.book.forget(payload["package"], payload["version"])
        elif name == "TARGETS":
            self.known_targets = {Target(t["abi_tag"], t["platform_tag"]): t["os_release"]
                                  for t in payload["targets"]}
            self.book.keep_targets({Target(t["abi_tag"], t["platform_tag"])
                                    for t in payload["targets"] if t["active"]})
        else:
            self.cancel(payload["package"], payload["version"])

    def handle_command(self) -> None:
        msg = self.recv_or_log(self.commands)
        if msg is None:
            return
        name, payload = msg
        if name == "HOLD":
            if payload["reason"] not in self.holds:
                self.log.warning("holding builds: %s", payload["reason"])
            self.holds.add(payload["reason"])
        elif name == "RELEASE":
            if payload["reason"] in self.holds:
                self.log.info("no longer holding builds for: %s", payload["reason"])
            self.holds.discard(payload["reason"])
            self._offer_parked(self.parking.targets())
        else:
            self.slave_action(payload["action"], payload["slave_id"])

    def slave_action(self, action: str, slave_id: Optional[int]) -> None:
        """An operator's pause/resume/skip/stop, applied at each slave's next request."""
        slaves = list(self.slaves.values()) if slave_id is None else \
            [s for s in [self.slaves_by_id.get(slave_id)] if s is not None]
        for slave in slaves:
            if action == "pause":
                slave.paused = True
            elif action == "resume":
                slave.paused = False
            elif action == "skip":
                if slave.state is SlaveStatus.BUILDING:
                    slave.attempt.skip = True
            else:
                slave.stop = True
            self.log.info("slave %d (%s): %s requested", slave.slave_id, slave.label, action)
            if slave.stop and slave.address in self.parking:
                # it waits for an answer: this is it
                self.router.send_to(slave.address, "DIE", {"reason": "stopped by the operator"})
                self._drop(slave, "stopped by the operator")
                continue
            self._report(slave)

    def cancel(self, package: str, version: Optional[str]) -> None:
        """Stop building *package* (one release, or all): it changed upstream."""
        self.book.cancel(package, version)
        for slave in self.slaves.values():
            if slave.job is not None and slave.job[0] == package and \
                    version in (None, slave.job[1]) and slave.state is SlaveStatus.BUILDING:
                self.log.info("skipping %s %s on slave %d: it changed upstream",
                              *slave.job, slave.slave_id)
                slave.attempt.skip = True

    def handle_transfer_result(self) -> None:
        msg = self.recv_or_log(self.transfer_results)
        if msg is None:
            return
        name, payload = msg
        slave = self._slave_by_id(payload["slave_id"])
        if slave is None or slave.state is not SlaveStatus.SENDING:
            return  # the slave was dropped meanwhile; file_receiver was told
        attempt = slave.attempt
        if name == "VERIFIED":
            filename = payload["file"]["filename"]
            attempt.files_done[filename] = payload["file"]
        else:
            filename = payload["filename"]
            attempt.rejected = f"{filename}: {payload['reason']}"
            attempt.retry_later = payload["retry"]
        if attempt.reply_deferred and attempt.sending == filename:
            attempt.reply_deferred = False
            self._next_file(slave)

    # --- the slave protocol ---------------------------------------------------

    def handle_slave(self) -> None:
        address, name, payload, key_id = self.router.recv_from_peer()
        slave = self.slaves.get(address)
        if isinstance(payload, PeerRefused):
            # revoked while connected (ZAP let it in at the handshake): told, dropped
            self.log_limited("refused-key", logging.WARNING, "refused slave %s: %s",
                             slave.label if slave else address.hex(), payload)
            self.router.send_to(address, "DIE", {
                "reason": f"the master refused this slave: {payload}"[:limits.REASON]})
            if slave is not None:
                self._drop(slave, str(payload))
            return
        if name is None:
            self.log.warning("dropped a bad message from %s: %s",
                             slave.label if slave else address.hex(), payload)
            self._refuse(address, slave, f"invalid message: {payload}")
            return
        if slave is None and name != "HELLO":
            if name != "BYE":
                self.router.send_to(address, "RESET", {"reason": "unknown slave; say HELLO"})
            return
        if slave is not None:
            slave.last_seen_s = self.clock()
            if slave.stop and name != "BYE":
                self.router.send_to(address, "DIE", {"reason": "stopped by the operator"})
                self._drop(slave, "stopped by the operator")
                return
        if name == "HELLO":
            self.do_hello(address, slave, payload, key_id)
        else:
            self.handlers[name](address, slave, payload)
        if slave is not None and slave.address in self.slaves:
            self._report(slave)

    def do_hello(self, address: bytes, slave: Optional[SlaveState], hello: dict,
                 key_id: Optional[str] = None) -> None:
        if hello["protocol"] != PROTOCOL_VERSION:
            self.log.warning("refused slave %s: protocol %d, not %d", hello["label"],
                             hello["protocol"], PROTOCOL_VERSION)
            self.router.send_to(address, "DIE", {
                "reason": f"protocol version {hello['protocol']} is not the master's "
                          f"{PROTOCOL_VERSION}; install the same piwheels version"})
            return
        kind, problem = hello_problem(hello, key_id, known_targets=self.known_targets,
                                      containment_required=self.containment_required)
        if problem is not None:
            # before anything is stored: a slave that cannot build for the farm is told why
            self.log_limited(kind, logging.WARNING, "refused slave %s: %s",
                             hello["label"], problem)
            self.router.send_to(address, "DIE", {"reason": problem[:limits.REASON]})
            if slave is not None:
                self._drop(slave, problem)
            return
        if slave is not None:
            self._drop(slave, "said HELLO again")
        now = self.clock()
        slave = SlaveState(
            slave_id=self._next_id, address=address, label=hello["label"],
            python_tag=hello["python_tag"], abi_tag=hello["abi_tag"],
            platform_tag=hello["platform_tag"], python_version=hello["python_version"],
            os=hello["os"], build_timeout_s=hello["build_timeout_s"],
            connected_s=now, last_seen_s=now, connected_at=self.wall_clock(),
            key_id=key_id, containment=hello["containment"], image=hello["image"],
            platforms=tuple(hello["platforms"]),
        )
        self._next_id += 1
        self.slaves[address] = slave
        self.slaves_by_id[slave.slave_id] = slave
        if hello["building"]:
            self._adopt(slave, (hello["building"]["package"], hello["building"]["version"]))
        self.log.info("slave %d (%s, %s on %s, key %s, builds contained by %s) connected",
                      slave.slave_id, slave.label, slave.target, slave.os,
                      key_id or "none", slave.containment)
        target = {"abi_tag": slave.abi_tag, "platform_tag": slave.platform_tag}
        if key_id is not None:
            self.tell(self.queue_requests, "TARGET", target)
        self.tell(self.queue_requests, "IMAGE", {**target, "image": slave.image, "os": slave.os})
        self.router.send_to(address, "ACK", {
            "slave_id": slave.slave_id, "index_url": self.index_url,
            "heartbeat_s": self.heartbeat_s})

    def do_idle(self, address: bytes, slave: SlaveState, idle: dict) -> None:
        slave.stats = idle["stats"]
        if slave.state not in (SlaveStatus.IDLE, SlaveStatus.SLEEPING):
            return self._refuse(address, slave, f"IDLE while {slave.state.value}")
        if self.paused or self.holds or slave.paused or self.unrecorded:
            # held until an operator (or the disk, or the recorder) lets go: ask later
            slave.state = SlaveStatus.SLEEPING
            slave.sleep_s = self.sleep_s
            self.router.send_to(address, "SLEEP", {"seconds": self.sleep_s})
            return
        job = self._next_job(slave)
        if job is None:
            slave.state = SlaveStatus.PARKED  # answered when a job comes, or in a heartbeat
            self.parking.park(address, slave.target, self.clock())
            return
        self._hand_out(slave, job)

    def _hand_out(self, slave: SlaveState, job: Job) -> None:
        slave.state = SlaveStatus.BUILDING
        slave.attempt = Attempt(job, build_started=self.wall_clock(), job_started_s=self.clock())
        self.book.start(job, slave.slave_id)
        self.builds_handed_out += 1
        self.router.send_to(slave.address, "BUILD", {"package": job[0], "version": job[1]})

    def _offer_parked(self, targets: list[Target]) -> None:
        """Hand the jobs waiting for *targets* to the slaves parked for them,
        the longest parked first."""
        if self.paused or self.holds or self.unrecorded:
            return
        for target in targets:
            for address in self.parking.waiting(target):
                slave = self.slaves.get(address)
                if not self.book.has_jobs(target):
                    break
                if slave is None or slave.paused:
                    continue
                job = self._next_job(slave)
                if job is not None:
                    self.parking.unpark(address)
                    slave.answered_s = self.clock()
                    self._hand_out(slave, job)
                    self._report(slave)

    def answer_parked(self) -> None:
        """Tell the slaves parked for a heartbeat to ask again at once, so that
        neither side takes the wait for a dead peer."""
        now = self.clock()
        for address in list(self.parking.due(now)):
            slave = self.slaves.get(address)
            if slave is not None:
                slave.state, slave.sleep_s, slave.answered_s = SlaveStatus.SLEEPING, 0.0, now
                self.router.send_to(address, "SLEEP", {"seconds": 0})

    def do_busy(self, address: bytes, slave: SlaveState, job: dict) -> None:
        slave.stats = job["stats"]
        if slave.state not in (SlaveStatus.BUILDING, SlaveStatus.SENDING) \
                or slave.job != (job["package"], job["version"]):
            return self._refuse(address, slave, f"BUSY with {job['package']} {job['version']} "
                                                f"while {slave.state.value}")
        if slave.attempt.skip and slave.state is SlaveStatus.BUILDING:
            self.router.send_to(address, "SKIP", {"reason": "skipped by the master"})
        else:
            self.router.send_to(address, "CONT")

    def do_built(self, address: bytes, slave: SlaveState, built: dict) -> None:
        job = (built["package"], built["version"])
        if slave.state is not SlaveStatus.BUILDING or slave.job != job:
            return self._refuse(address, slave, f"BUILT {job} while {slave.state.value}")
        attempt = slave.attempt
        attempt.built = built
        if attempt.skip:
            self._finish(slave, None)
            return
        if not built["success"]:
            self._finish(slave, "failed", built["reason"] or "the build failed")
            return
        problem = built_files_problem(built, slave.accepted_platforms)
        if problem:
            self._finish(slave, "rejected", problem)
            return
        slave.state = SlaveStatus.SENDING
        attempt.files_todo = [f["filename"] for f in built["files"]]
        for facts in built["files"]:
            self.transfer_requests.send("EXPECT", {
                "slave_id": slave.slave_id, "package": job[0], "version": job[1],
                "builder_abi": slave.abi_tag, "builder_platform": slave.platform_tag,
                "builder_platforms": list(slave.accepted_platforms),
                "key_id": slave.key_id, "claimed": facts,
            })
        self._next_file(slave)

    def do_sent(self, address: bytes, slave: SlaveState, sent: dict) -> None:
        attempt = slave.attempt
        if slave.state is not SlaveStatus.SENDING or attempt.sending != sent["filename"] \
                or attempt.reply_deferred:
            return self._refuse(address, slave,
                                f"SENT {sent['filename']} while {slave.state.value}")
        if attempt.rejected is None and sent["filename"] not in attempt.files_done:
            attempt.reply_deferred = True  # the verdict is still on its way
            return
        self._next_file(slave)

    def do_bye(self, address: bytes, slave: SlaveState, bye: dict) -> None:
        self._drop(slave, f"said BYE ({bye['reason'] or 'no reason'})")

    # --- helpers ----------------------------------------------------------------

    def _next_job(self, slave: SlaveState) -> Optional[Job]:
        while True:
            job, ask = self.book.next_job(slave.target, slave.identity, self.clock(),
                                          slave.image)
            if ask:
                self.log.debug("asking for more builds for %s", slave.target)
                self.tell(self.queue_requests, "MORE", {"abi_tag": slave.abi_tag,
                                                        "platform_tag": slave.platform_tag})
            skip = None if job is None else self.skips.verdict(job, slave)
            if skip is None:
                return job
            self._skip(job, slave, skip)  # and the slave gets the next one at once

    def _skip(self, job: Job, slave: SlaveState, skip: Skip) -> None:
        """Never hand *job* to this target: the recorder stores why (see :mod:`.skips`)."""
        self.book.recent[(*job, slave.target)] = self.clock() + self.book.recent_s
        self.log_limited("skipped", logging.INFO, "%s %s not built for %s: %s", *job,
                         slave.target, skip.detail)
        try:
            self.record_requests.send("SKIP", {
                "package": job[0], "version": job[1], "abi_tag": slave.abi_tag,
                "platform_tag": slave.platform_tag,
                "cause": skip.cause, "detail": skip.detail}, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the recorder is behind: the queue offers it again later, to the same end

    def _next_file(self, slave: SlaveState) -> None:
        attempt = slave.attempt
        if attempt.rejected is not None and attempt.retry_later:
            self.log.info("%s %s from slave %d goes back to the queue: %s",
                          *attempt.job, slave.slave_id, attempt.rejected)
            self.transfer_requests.send("ABANDON", {"slave_id": slave.slave_id})
            self.tell(self.queue_requests, "REFRESH", {"package": attempt.job[0]})
            self._finish(slave, None, hold_back=False)
        elif attempt.rejected is not None:
            self._finish(slave, "rejected", attempt.rejected)
        elif attempt.files_todo:
            attempt.sending = attempt.files_todo.pop(0)
            self.router.send_to(slave.address, "SEND", {"filename": attempt.sending})
        else:
            self._finish(slave, "success", None)

    def _finish(self, slave: SlaveState, status: Optional[str], reason: Optional[str] = None,
                *, hold_back: bool = True) -> None:
        """Hand the attempt to the recorder (unless skipped) and free the slave;
        *hold_back*: not hand the release to this target again for a while."""
        attempt = slave.attempt
        built, job = attempt.built, attempt.job
        if status == "rejected":
            # a slave can send refused results at will: the rows keep each one
            self.log_limited("rejected-build", logging.WARNING,
                             "rejected %s %s from slave %d (%s): %s",
                             *job, slave.slave_id, slave.label, reason)
        files = []  # what the file receiver computed, not what BUILT claimed
        cause = failure_cause(built, reason) if status == "failed" else None
        if status == "success":
            files = [attempt.files_done[facts["filename"]] for facts in built["files"]]
        if status in ("failed", "rejected"):
            slave.failed(status, reason, built.get("diagnosis"))
        if status is not None:
            if status != "success" and (attempt.files_done or slave.state is SlaveStatus.SENDING):
                self.transfer_requests.send("ABANDON", {"slave_id": slave.slave_id})
            self._record({
                "package": job[0], "version": job[1], "abi_tag": slave.abi_tag,
                "platform_tag": slave.platform_tag, "os_release": slave.os,
                "slave_label": slave.label, "builder": slave.identity,
                "started": attempt.build_started,
                "duration_s": built["duration_s"], "status": status,
                "reason": (reason or None) and reason[:limits.REASON], "log": built["log"],
                "files": files, "image": slave.image,
                "smoke": built["smoke"] if status == "success" else None,
                # the builder's claim; the recorder diagnoses the log itself
                "claimed_diagnosis": built.get("diagnosis") if status == "failed" else None,
            })
        first_failure, offer = self.book.finished(
            job, slave.target, slave.identity, status, files, self.clock(),
            hold_back=hold_back, image=slave.image, deterministic=deterministic(cause))
        if first_failure:
            self.log_limited("first-failure", logging.INFO,
                             "%s %s %s for %s on slave %d (%s): offered to another builder "
                             "before it counts", *job, status, slave.target, slave.slave_id,
                             slave.identity)
        slave.state, slave.attempt = SlaveStatus.IDLE, None
        self.router.send_to(slave.address, "DONE")
        self._offer_parked(offer)

    def _record(self, attempt: dict) -> None:
        """Hand *attempt* to the recorder, or keep it (in order) while the recorder is full."""
        self.unrecorded.append(attempt)
        self.flush_records()

    def on_stop(self) -> None:
        """The recorder stops after this task: hand it what it has not taken yet."""
        deadline = time.monotonic() + STOP_FLUSH_S
        while self.unrecorded and time.monotonic() < deadline:
            self.record_requests.zsocket.poll(100, zmq.POLLOUT)
            self.flush_records()
        if self.unrecorded:
            self.log.error("%d finished attempts were not recorded (the recorder is stuck); "
                           "they will be built again", len(self.unrecorded))

    def flush_records(self) -> None:
        while self.unrecorded:
            try:
                self.record_requests.send("RECORD", self.unrecorded[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self.unrecorded.popleft()

    def _adopt(self, slave: SlaveState, job: Job) -> None:
        """Take on a build a slave was running before it reconnected."""
        owner_id = self.book.builder_of(job)
        owner = self._slave_by_id(owner_id) if owner_id is not None else None
        if owner is not None and owner.label == slave.label:
            self._drop(owner, "reconnected", requeue=False)
            owner = None
        slave.state = SlaveStatus.BUILDING
        slave.attempt = Attempt(job, build_started=self.wall_clock(), job_started_s=self.clock())
        if owner is not None:
            slave.attempt.skip = True  # someone else has it: tell this one to stop
        else:
            self.book.start(job, slave.slave_id)

    def _refuse(self, address: bytes, slave: Optional[SlaveState], why: str) -> None:
        """A protocol violation: tell the slave to go away and forget it."""
        self.log.warning("slave %s: %s; told it to go",
                         f"{slave.label} (key {slave.key_id or 'none'})" if slave else "?", why)
        self.router.send_to(address, "DIE", {"reason": why[:limits.REASON]})
        if slave is not None:
            self._drop(slave, why)

    def _drop(self, slave: SlaveState, why: str, *, requeue: bool = True) -> None:
        self.slaves.pop(slave.address, None)
        self.slaves_by_id.pop(slave.slave_id, None)
        self.parking.unpark(slave.address)
        self.report("SLAVE_GONE", {"slave_id": slave.slave_id})
        if slave.job is not None and self.book.builder_of(slave.job) == slave.slave_id:
            offer = self.book.lost(slave.job, slave.target, self.clock(), requeue=requeue)
            if requeue:
                self.tell(self.queue_requests, "REFRESH", {"package": slave.job[0]})
            self._offer_parked(offer)
        if slave.state is SlaveStatus.SENDING or (slave.attempt and slave.attempt.files_done):
            self.transfer_requests.send("ABANDON", {"slave_id": slave.slave_id})
        self.log.info("slave %d (%s, key %s) dropped: %s%s", slave.slave_id, slave.label,
                      slave.key_id or "none", why,
                      f" during {slave.job[0]} {slave.job[1]}" if slave.job else "")

    def _slave_by_id(self, slave_id: int) -> Optional[SlaveState]:
        return self.slaves_by_id.get(slave_id)

    def expire_slaves(self) -> None:
        now = self.clock()
        for slave in list(self.slaves.values()):
            if slave.state is SlaveStatus.PARKED:
                continue  # it waits for this side
            limit = self.heartbeat_s * self.liveness
            if slave.state is SlaveStatus.SLEEPING:
                limit += slave.sleep_s
            # a parked slave's liveness counts from its answer
            quiet_s = now - max(slave.last_seen_s, slave.answered_s)
            if quiet_s > limit:
                self._drop(slave, f"silent for {quiet_s:.1f} s")
        self.book.expire(now)

    def _report(self, slave: SlaveState) -> None:
        self.report("SLAVE", {"slave": slave.report(self.clock())})

    def report_slaves(self) -> None:
        """Every slave's state, so monitors see "last seen" and build times move."""
        for slave in self.slaves.values():
            self._report(slave)

    def status(self) -> dict:
        return {
            "slaves": len(self.slaves),
            "building": sum(1 for s in self.slaves.values() if s.state is SlaveStatus.BUILDING),
            "parked": len(self.parking),
            "queued": self.book.queued(),
            "handed_out": self.builds_handed_out,
            "holds": sorted(self.holds | ({"paused"} if self.paused else set())
                            | ({RECORDER_BEHIND} if self.unrecorded else set())),
        }

