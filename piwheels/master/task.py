"""The actor base every master task is built on.

A task is a thread that owns its ZeroMQ sockets and state.  It registers each
socket with a handler, schedules periodic jobs with :meth:`Task.every`, and
obeys PAUSE/RESUME/QUIT on its inproc control socket.  It talks to other tasks
only through the messages of :mod:`piwheels.protocols`.  An exception escaping
a handler is logged and reported to the supervisor, which stops the master.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import zmq

from ..errors import PiwheelsError
from ..protocols import Protocol, STATUS_REPORTS, SUPERVISOR, TASK_CONTROL
from ..transport import ProtocolError, Socket

#: Where tasks report what monitors should see (admin_service listens).
#: How often each task reports its :meth:`Task.status`.
STATUS_INTERVAL_S = 2.0
#: :meth:`Task.log_limited` logs each kind of event at most this often.
LIMITED_LOG_INTERVAL_S = 60.0

Clock = Callable[[], float]


def control_address(task_name: str) -> str:
    return f"inproc://control-{task_name}"


@dataclass
class _Timer:
    interval_s: float
    job: Callable[[], None]
    due: float


class Task(threading.Thread):
    """One master actor.  Subclasses set :attr:`name` and register their sockets."""

    name = "task"
    #: how loudly :meth:`tell` logs a message nobody took (a task acting for an
    #: operator raises it: what it drops, the operator asked for)
    dropped_message_level = logging.DEBUG

    def __init__(self, ctx: zmq.Context, *, clock: Clock = time.monotonic) -> None:
        super().__init__(name=self.name, daemon=True)
        self.ctx = ctx
        self.clock = clock
        self.log = logging.getLogger(f"piwheels.master.{self.name}")
        self.paused = False
        self._quit = False
        self._poller = zmq.Poller()
        self._handlers: dict[zmq.Socket, Callable[[], None]] = {}
        #: sockets emptied before any other socket's message is handled
        self._goes_first: list[zmq.Socket] = []
        self._sockets: list[Socket] = []
        self._timers: list[_Timer] = []
        self._limited_logs: dict[str, list] = {}  # key -> [last logged, held back since]
        self._task_control = self.socket(zmq.PULL, TASK_CONTROL.reverse())
        self._task_control.bind(control_address(self.name))
        self.register(self._task_control, self._handle_control, goes_first=True)
        # lingers, so a FAILED sent just before the task's sockets close still arrives
        self._supervisor = self.socket(zmq.PUSH, SUPERVISOR, linger_ms=1000)
        self._supervisor.connect(SUPERVISOR.address)
        self.status_reports = self.socket(zmq.PUSH, STATUS_REPORTS)
        self.status_reports.connect(STATUS_REPORTS.address)
        self.every(STATUS_INTERVAL_S, self.report_status)

    # --- building blocks for subclasses ---------------------------------------

    def socket(self, kind: int, protocol: Protocol, **options) -> Socket:
        """A socket this task owns (closed when it stops)."""
        sock = Socket.make(self.ctx, kind, protocol, **options)
        self._sockets.append(sock)
        return sock

    def register(self, sock: Socket, handler: Callable[[], None], *,
                 goes_first: bool = False) -> None:
        """Call *handler* (which reads one message) whenever *sock* has one waiting.

        A *goes_first* socket is emptied before each message of the others is
        handled.  Give it to what other tasks send: ZeroMQ keeps no order across
        sockets, so without it a peer's message can overtake, say, the EXPECT
        or QUEUE that another task sent before the peer had even written it.
        """
        self._poller.register(sock.zsocket, zmq.POLLIN)
        self._handlers[sock.zsocket] = handler
        if goes_first:
            self._goes_first.append(sock.zsocket)

    def unregister(self, sock: Socket) -> None:
        self._poller.unregister(sock.zsocket)
        del self._handlers[sock.zsocket]
        if sock.zsocket in self._goes_first:
            self._goes_first.remove(sock.zsocket)

    def every(self, interval_s: float, job: Callable[[], None], *, now: bool = False) -> None:
        """Run *job* every *interval_s* seconds (first run at once if *now*)."""
        due = self.clock() + (0 if now else interval_s)
        self._timers.append(_Timer(interval_s, job, due))

    def recv_or_log(self, sock: Socket) -> Optional[tuple[str, dict]]:
        """The next message on an internal socket; a bad one is logged and dropped."""
        try:
            return sock.recv()
        except ProtocolError as exc:
            self.log.error("dropped a bad %s message: %s", sock.protocol.name, exc)
            return None

    def log_limited(self, key: str, level: int, msg: str, *args) -> bool:
        """Log *msg* unless an event of kind *key* was logged in the last
        :data:`LIMITED_LOG_INTERVAL_S`; the next line says how many were held back.

        For what a peer or an operator can repeat at will (a bad request, say):
        each is answered, but the log is not flooded.  True if it was logged.
        """
        now = self.clock()
        entry = self._limited_logs.get(key)
        if entry is not None and now - entry[0] < LIMITED_LOG_INTERVAL_S:
            entry[1] += 1
            return False
        held = entry[1] if entry is not None else 0
        if held:
            msg += " (%d more like it not logged)"
            args = (*args, held)
        self.log.log(level, msg, *args)
        self._limited_logs[key] = [now, 0]
        return True

    def tell(self, sock: Socket, name: str, payload: Optional[dict] = None) -> bool:
        """Send to another task without ever blocking; False if it is not taking messages.

        Only a task that has stopped (or is far behind) refuses: what is
        dropped then is recalculated or redone after a restart.  The drop is
        logged at :attr:`dropped_message_level`.
        """
        try:
            sock.send(name, payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.log.log(self.dropped_message_level, "nobody takes %s messages; dropped %s",
                         sock.protocol.name, name)
            return False
        return True

    def report(self, name: str, payload: dict) -> None:
        """Tell admin_service something for the monitors (dropped if it is not there)."""
        try:
            self.status_reports.send(name, payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def report_status(self) -> None:
        status = self.status()
        if status:
            self.report("TASK", {"task": self.name, "status": status})

    # --- hooks ----------------------------------------------------------------

    def status(self) -> dict:
        """Figures for the monitor (empty: nothing to report)."""
        return {}

    def open_resources(self) -> None:
        """Called in the task's thread before :meth:`on_start` (see :mod:`.db_task`)."""

    def close_resources(self) -> None:
        """Called in the task's thread after :meth:`on_stop` (also after a failure)."""

    def on_start(self) -> None:
        """Called in the task's thread before the loop starts."""

    def on_stop(self) -> None:
        """Called in the task's thread after the loop ends (also after a failure)."""

    def on_pause(self) -> None:
        pass

    def on_resume(self) -> None:
        pass

    # --- the loop ---------------------------------------------------------------

    def run(self) -> None:
        started = False
        try:
            self.open_resources()
            self.on_start()
            started = True
            self._supervisor.send("STARTED", {"task": self.name})
            while not self._quit:
                self._run_due_timers()
                timeout_ms = self._poll_timeout_ms()
                for zsocket, _ in self._poller.poll(timeout_ms):
                    self._empty_goes_first()
                    handler = self._handlers.get(zsocket)
                    if handler is not None and zsocket not in self._goes_first:
                        handler()
                    if self._quit:
                        break
        except Exception as exc:
            # The supervisor logs the error (at start-up, exits with it) in one line.
            # Only a bug met while running gets its traceback logged here.
            if isinstance(exc, PiwheelsError):
                error = str(exc)
            else:
                error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if started and not isinstance(exc, (PiwheelsError, OSError)):
                self.log.critical("task failed: %s", exc, exc_info=True)
            else:
                self.log.debug("task failed: %s", error, exc_info=True)
            try:
                self._supervisor.send("FAILED", {"task": self.name, "error": error[-9000:]})
            except Exception:  # the supervisor may be gone already
                pass
        finally:
            try:
                try:
                    self.on_stop()
                finally:
                    self.close_resources()
            finally:
                for sock in self._sockets:
                    sock.close()

    def _empty_goes_first(self) -> None:
        for zsocket in self._goes_first:
            while not self._quit and zsocket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._handlers[zsocket]()

    def _run_due_timers(self) -> None:
        now = self.clock()
        for timer in self._timers:
            if timer.due <= now:
                timer.job()
                timer.due = max(timer.due + timer.interval_s, now)

    def _poll_timeout_ms(self) -> int:
        if not self._timers:
            return 1000
        wait = min(timer.due for timer in self._timers) - self.clock()
        return max(0, min(1000, int(wait * 1000) + 1))

    def _handle_control(self) -> None:
        msg = self.recv_or_log(self._task_control)
        if msg is None:
            return
        name, _ = msg
        if name == "QUIT":
            self._quit = True
        elif name == "PAUSE" and not self.paused:
            self.paused = True
            self.on_pause()
        elif name == "RESUME" and self.paused:
            self.paused = False
            self.on_resume()


class TaskControl:
    """The supervisor's handle on one task's control socket (used from one thread)."""

    def __init__(self, ctx: zmq.Context, task_name: str) -> None:
        self.task_name = task_name
        self._sock = Socket.make(ctx, zmq.PUSH, TASK_CONTROL)
        self._sock.connect(control_address(task_name))

    def send(self, name: str) -> bool:
        """Send a control message; False if the task is no longer there to take it."""
        try:
            self._sock.send(name, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        self._sock.close()
