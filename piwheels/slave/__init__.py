"""piw-slave: build the wheels the master asks for and send them back.

One loop with at most one request to the master outstanding.  The build runs
in a worker thread so the loop keeps heartbeating (BUSY) and serving file
chunks.  If the master stays silent past the reply timeout, the slave throws
its sockets away, connects afresh and says HELLO again, naming any build it
is still running so that the build keeps its place.

At start the slave makes itself the subreaper of its descendants, removes
what dead slaves left in the work dir and claims a work area of its own
(:mod:`piwheels.slave.work_area`); at exit it kills what is left of its
builds and removes that area.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Optional, Sequence

import zmq

from .. import cli, settings
from ..errors import PiwheelsError
from ..host_stats import host_stats
from ..keys import key_id
from ..protocols import MAX_PLATFORMS, PROTOCOL_VERSION, SLAVE
from ..settings import SlaveConfig
from ..systemd import SystemdNotifier
from ..transport import CurveClient, ProtocolError, Socket
from . import processes
from .builder import Builder, BuildLimits, BuildResult
from .explain import Explainer
from .file_sender import FileSender
from .handshake import HandshakeWatch
from .work_area import WorkArea, sweep

log = logging.getLogger("piwheels.slave")


#: How long to wait for ACK after HELLO before trying a fresh connection.
HELLO_TIMEOUT_S = 3.0
#: Heartbeats the master may miss before the slave reconnects.  More than one:
#: an IDLE waits up to a heartbeat unanswered while the master has no job for
#: it (it is parked: piwheels/master/parking.py).
MASTER_LIVENESS = 3
#: The longest the loop sleeps between looks at the build thread and timers.
LOOP_INTERVAL_S = 0.1

#: The exit status after the master said DIE (an operator's stop, or a version
#: mismatch): restarting would not help, so the systemd unit does not.
EXIT_TOLD_TO_STOP = 3

#: The least time between two warnings that the master's name does not resolve.
RESOLVE_WARNING_INTERVAL_S = 60.0
#: What HELLO says of a builder that does not say how it contains its builds.
CONTAINMENT_UNKNOWN = "none: unknown"

Clock = Callable[[], float]


class SlaveState(Enum):
    """Where the slave is in the protocol (docs/protocols.rst)."""

    CONNECTING = "connecting"  # HELLO sent, waiting for ACK
    IDLE = "idle"              # IDLE sent, waiting for BUILD or SLEEP (maybe parked)
    SLEEPING = "sleeping"      # told to SLEEP: IDLE again when it is over
    BUILDING = "building"      # a build runs (BUSY heartbeats) or its BUILT is due
    BUILT = "built"            # BUILT sent, waiting for SEND or DONE
    SENDING = "sending"        # a file is being pulled by the master


@dataclass
class BuildAttempt:
    """One build the master handed out, from BUILD to DONE."""

    package: str
    version: str
    thread: Optional[threading.Thread] = None
    result: Optional[BuildResult] = None
    skipped: bool = False
    sending_filename: Optional[str] = None
    #: BUILT's diagnosis of a failed build (see :mod:`piwheels.slave.explain`)
    diagnosis: Optional[dict] = None

    def close(self) -> None:
        """Remove what the build made (its wheels)."""
        if self.result is not None:
            self.result.close()


class Slave:
    """The slave's state machine (see the module docstring)."""

    def __init__(self, *, master: str, slave_port: int, file_port: int, label: str,
                 builder: Builder, build_timeout_s: float, clock: Clock = time.monotonic,
                 work_area: Optional[WorkArea] = None,
                 curve: Optional[CurveClient] = None,
                 explainer: Optional[Explainer] = None) -> None:
        self.master = master
        self.work_area = work_area
        self.slave_address = f"tcp://{master}:{slave_port}"
        self.file_address = f"tcp://{master}:{file_port}"
        self.label = label
        self.builder = builder
        self.build_timeout_s = build_timeout_s
        self.explainer = explainer
        self.clock = clock
        self.ctx = zmq.Context()
        self.curve = curve
        self.sock: Optional[Socket] = None
        #: why the master does not answer, if it refuses the handshake
        self.handshakes = HandshakeWatch(curve.keys.key_id if curve else None, "slave",
                                         clock=clock)
        self.sender = FileSender(self.ctx, self.file_address, clock=clock, curve=curve)
        self.slave_id: Optional[int] = None
        self.heartbeat_s = 3.0
        self.outstanding: Optional[tuple[str, float]] = None
        self.last_sent_s = 0.0
        self.state = SlaveState.CONNECTING
        self.attempt: Optional[BuildAttempt] = None
        self.sleep_until_s = 0.0
        self.sent_pending: Optional[str] = None
        self.next_resolve_warning_s = 0.0
        self.stopping = threading.Event()
        self.exit_reason: Optional[str] = None
        self.exit_status = 0
        self.environment = builder.environment()
        if builder.contained:
            log.info("builds are contained: %s", self.environment["containment"])
        else:
            log.warning("builds run UNCONTAINED (%s)", self.environment["containment"])
        self.notifier = SystemdNotifier()
        self.next_watchdog_s = 0.0

    # --- connection -----------------------------------------------------------

    def connect(self) -> None:
        """A fresh socket to the master (the old one, if any, is thrown away)."""
        if self.sock is not None:
            self._close_socket()
            self.sender.reconnect()
        self.warn_if_unresolvable()
        self.sock = Socket.make(self.ctx, zmq.DEALER, SLAVE, curve_client=self.curve)
        self.handshakes.attach(self.sock.zsocket)
        self.sock.connect(self.slave_address)
        self.outstanding = None
        self.slave_id = None
        self.state = SlaveState.CONNECTING
        self.sent_pending = None
        building = None
        if self.attempt is not None:
            building = {"package": self.attempt.package, "version": self.attempt.version}
        env = self.environment
        self.request("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": self.label,
            "python_tag": env["python_tag"], "abi_tag": env["abi_tag"],
            "platform_tag": env["platform_tag"], "python_version": env["python_version"],
            "pip_version": env["pip_version"], "os": env["os"], "image": env["image"],
            "build_timeout_s": self.build_timeout_s, "building": building,
            "containment": self.containment,
            "platforms": list(env.get("platforms", ()))[:MAX_PLATFORMS],
        })

    @property
    def containment(self) -> str:
        """How the builder contains builds, for HELLO ("none: <why>" if it cannot)."""
        value = str(self.environment.get("containment") or CONTAINMENT_UNKNOWN)
        return value[:200]

    def _close_socket(self) -> None:
        self.handshakes.close()
        self.sock.close()

    def warn_if_unresolvable(self) -> None:
        """Say (at most once a minute) that the master's name does not resolve.

        ZeroMQ would only retry in silence; a running slave keeps trying (its
        build keeps its place when the name comes back), but says why it waits.
        """
        error = resolve_error(self.master)
        now = self.clock()
        if error is not None and now >= self.next_resolve_warning_s:
            log.warning("%s; still trying", error)
            self.next_resolve_warning_s = now + RESOLVE_WARNING_INTERVAL_S

    def request(self, name: str, payload: Optional[dict] = None) -> None:
        self.sock.send(name, payload)
        self.outstanding = (name, self.clock())
        self.last_sent_s = self.clock()

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.connect()
        poller = zmq.Poller()
        try:
            while not self.stopping.is_set():
                poller = zmq.Poller()
                poller.register(self.sock.zsocket, zmq.POLLIN)
                poller.register(self.sender.socket.zsocket, zmq.POLLIN)
                if self.handshakes.socket is not None:
                    poller.register(self.handshakes.socket, zmq.POLLIN)
                events = dict(poller.poll(int(LOOP_INTERVAL_S * 1000)))
                if self.handshakes.socket is not None and self.handshakes.socket in events:
                    self.handshakes.handle()
                if self.sock.zsocket in events:
                    self.handle_reply()
                if self.sender.socket.zsocket in events and not self.stopping.is_set():
                    outcome = self.sender.handle()
                    if outcome is not None:
                        self.transfer_finished(*outcome)
                if not self.stopping.is_set():
                    self.tick()
        finally:
            self.shutdown()
        if self.exit_reason:
            log.log(logging.ERROR if self.exit_status else logging.INFO, "%s", self.exit_reason)
        return self.exit_status

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        self.notifier.stopping()
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            if attempt.thread is not None and attempt.thread.is_alive():
                self.builder.cancel()
                attempt.thread.join(30)
            attempt.close()
        if self.sock is not None and self.slave_id is not None and self.exit_status == 0:
            try:
                self.sock.send("BYE", {"reason": self.exit_reason or "slave stopped"},
                               flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        if self.sock is not None:
            self._close_socket()
        self.sender.close()
        self.ctx.term()
        if self.work_area is not None:
            self.work_area.close()

    def tick(self) -> None:
        now = self.clock()
        if self.notifier.watchdog_interval_s and now >= self.next_watchdog_s:
            self.notifier.watchdog()
            self.next_watchdog_s = now + self.notifier.watchdog_interval_s
        if self.outstanding is not None:
            name, sent_s = self.outstanding
            limit = HELLO_TIMEOUT_S if name == "HELLO" else self.heartbeat_s * MASTER_LIVENESS
            if now - sent_s > limit:
                log.warning("no answer from the master for %.1f s; reconnecting", now - sent_s)
                self.connect()
            return
        attempt = self.attempt
        if self.state is SlaveState.BUILDING and attempt.result is not None:
            self.send_built()
        elif self.sent_pending is not None:
            filename, self.sent_pending = self.sent_pending, None
            self.request("SENT", {"filename": filename})
        elif self.state in (SlaveState.BUILDING, SlaveState.SENDING) and \
                now - self.last_sent_s >= self.heartbeat_s:
            self.request("BUSY", {"package": attempt.package, "version": attempt.version,
                                  "stats": host_stats(self.builder.work_dir)})
        elif self.state is SlaveState.SLEEPING and now >= self.sleep_until_s:
            self.state = SlaveState.IDLE
            self.request("IDLE", {"stats": host_stats(self.builder.work_dir)})

    # --- replies from the master -----------------------------------------------

    def handle_reply(self) -> None:
        try:
            name, payload = self.sock.recv()
        except ProtocolError as exc:
            log.error("ignored a bad message from the master: %s", exc)
            return
        self.outstanding = None
        handler = getattr(self, f"do_{name.lower()}")
        handler(payload)

    def do_ack(self, ack: dict) -> None:
        self.slave_id = ack["slave_id"]
        self.heartbeat_s = ack["heartbeat_s"]
        self.builder.index_url = ack["index_url"]
        log.info("connected to the master as slave %d", self.slave_id)
        self.notifier.ready()
        self.notifier.status(f"slave {self.slave_id} of {self.slave_address}")
        if self.attempt is not None:
            self.state = SlaveState.BUILDING  # still running, or finished: BUILT goes next
        else:
            self.state = SlaveState.IDLE
            self.request("IDLE", {"stats": host_stats(self.builder.work_dir)})

    def do_build(self, job: dict) -> None:
        attempt = BuildAttempt(job["package"], job["version"])
        self.attempt = attempt
        self.state = SlaveState.BUILDING
        log.info("building %s %s", attempt.package, attempt.version)
        attempt.thread = threading.Thread(
            target=self._build, args=(attempt,), name="build", daemon=True)
        attempt.thread.start()

    def _build(self, attempt: BuildAttempt) -> None:
        if attempt.skipped:  # skipped before the build could start
            attempt.result = BuildResult(success=False, duration_s=0.0, log="skipped\n",
                                         reason="skipped by the master", wheels=[])
            return
        try:
            result = self.builder.build(attempt.package, attempt.version)
        except Exception as exc:  # a bug in the builder must not kill the slave
            log.exception("the build of %s %s crashed", attempt.package, attempt.version)
            result = BuildResult(success=False, duration_s=0.0, log=f"builder crashed: {exc}\n",
                                 reason=f"builder crashed: {exc}", wheels=[])
        if not result.success and not attempt.skipped and self.explainer is not None:
            # before result is set: the loop heartbeats (BUSY) through the lookup
            try:
                attempt.diagnosis = self.explainer.explain(result.log, result.reason)
            except Exception:  # the build's record matters more than its diagnosis
                log.exception("diagnosing the build of %s %s failed",
                              attempt.package, attempt.version)
        attempt.result = result

    def send_built(self) -> None:
        attempt = self.attempt
        result = attempt.result
        files = [] if not result.success else [facts.to_dict() for _, facts in result.wheels]
        reason = "skipped by the master" if attempt.skipped else result.reason
        log.info("built %s %s: %s in %.1f s", attempt.package, attempt.version,
                 "success" if result.success else f"failed ({reason})", result.duration_s)
        self.request("BUILT", {
            "package": attempt.package, "version": attempt.version,
            "success": result.success and not attempt.skipped,
            "duration_s": result.duration_s, "log": result.log, "reason": reason,
            "files": files if not attempt.skipped else [],
            "smoke": (None if result.smoke is None or not result.success or attempt.skipped
                      else [smoke.to_dict() for smoke in result.smoke]),
            "diagnosis": None if attempt.skipped or result.success else attempt.diagnosis,
        })
        self.state = SlaveState.BUILT

    def do_sleep(self, sleep: dict) -> None:
        self.state = SlaveState.SLEEPING
        self.sleep_until_s = self.clock() + sleep["seconds"]

    def do_cont(self, _: dict) -> None:
        pass

    def do_skip(self, skip: dict) -> None:
        attempt = self.attempt
        if attempt is None:
            log.warning("the master skipped a build this slave is not running: %s",
                        skip["reason"])
            return
        log.info("the master skipped %s %s: %s", attempt.package, attempt.version,
                 skip["reason"])
        attempt.skipped = True
        self.builder.cancel()

    def do_send(self, send: dict) -> None:
        attempt = self.attempt
        result = attempt.result if attempt is not None else None
        for path, facts in result.wheels if result is not None else []:
            if facts.filename == send["filename"]:
                self.state = SlaveState.SENDING
                attempt.sending_filename = send["filename"]
                self.last_sent_s = self.clock()
                self.sender.offer(self.slave_id, path, facts.size, facts.sha256)
                return
        log.error("the master asked for %s, which this build did not make", send["filename"])
        self.sent_pending = send["filename"]

    def transfer_finished(self, ok: bool, reason: Optional[str]) -> None:
        if self.state is not SlaveState.SENDING:
            return
        if not ok:
            log.warning("the master refused a file: %s", reason)
        self.sent_pending = self.attempt.sending_filename

    def do_done(self, _: dict) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.close()
        self.state = SlaveState.IDLE
        self.request("IDLE", {"stats": host_stats(self.builder.work_dir)})

    def do_die(self, die: dict) -> None:
        self.exit_reason = f"the master told this slave to stop: {die['reason']}"
        self.exit_status = EXIT_TOLD_TO_STOP
        self.stopping.set()

    def do_reset(self, reset: dict) -> None:
        log.info("the master does not know this slave (%s); saying HELLO again", reset["reason"])
        self.connect()


def resolve_error(host: str) -> Optional[str]:
    """Why *host* (the master's name) does not resolve, or None if it does."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        return f"the master's name {host!r} does not resolve: {detail}"
    return None


def make_slave(options: SlaveConfig) -> Slave:
    if os.geteuid() == 0:
        raise PiwheelsError(
            "piw-slave refuses to run as root: builds run arbitrary code from the "
            "upstream index; run it as an unprivileged user")
    error = resolve_error(options.master)
    if error is not None:
        # at start, a typo is likelier than an outage: say so and let systemd retry
        raise PiwheelsError(error)
    work_dir = Path(options.work_dir or tempfile.gettempdir())
    cache_dir = Path(options.cache_dir) if options.cache_dir else work_dir / "piwheels-cache"
    for directory in (work_dir, cache_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(f"{directory} is not writable")
        except OSError as exc:
            raise PiwheelsError(f"cannot use {directory} for builds: {exc}") from None
    processes.become_subreaper()
    swept = sweep(work_dir)
    if swept.areas_removed:
        log.info("%s", swept.summary())
    work_area = WorkArea.claim(work_dir)
    try:
        builder = Builder(
            python=options.python or sys.executable, index_url="", work_dir=work_area.path,
            cache_dir=cache_dir, work_area=work_area, bwrap=options.bwrap,
            hidden=[Path(p) for p in options.private_paths],
            smoke_test=options.smoke_test, smoke_timeout_s=options.smoke_timeout_s,
            image_salt=options.image_salt,
            limits=BuildLimits(
                timeout_s=options.build_timeout_s,
                memory_bytes=options.memory_bytes,
                max_log_bytes=options.max_log_bytes,
                pid_limit=options.pid_limit,
                disk_bytes=options.disk_bytes,
            ),
        )
        curve = options.curve
        if curve is not None:
            log.info("this slave's key is %s; the master's is %s", curve.keys.key_id,
                     key_id(curve.server_public))
        else:
            log.info("no --slave-key: connecting without keys (only a master without keys "
                     "takes this slave)")
        return Slave(
            master=options.master, slave_port=options.slave_port, file_port=options.file_port,
            label=options.label or socket.gethostname(), builder=builder,
            build_timeout_s=options.build_timeout_s, work_area=work_area, curve=curve,
            explainer=Explainer(cache_dir, options.lookup_timeout_s),
        )
    except BaseException:
        work_area.close()
        raise


def _main(argv: Optional[Sequence[str]]) -> int:
    slave = make_slave(settings.load(settings.SlaveConfig, "piw-slave",
                                     __doc__.splitlines()[0], settings.SLAVE_OPTIONS, argv))

    def on_signal(signum, frame):
        log.info("received %s; stopping", signal.Signals(signum).name)
        slave.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return slave.run()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
