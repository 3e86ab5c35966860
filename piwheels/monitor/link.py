"""The monitor's link to the master: SNAPSHOT first, then the STATUS feed.

Nothing here blocks.  The screen's loop calls :meth:`MasterLink.poll` a few
times a second; it reads whatever has arrived, sends the operator's next
action, and notices when the master goes quiet.  While the master cannot be
reached, the model says why and the link asks again every
:data:`RETRY_INTERVAL_S`, with fresh sockets each time it gives up waiting.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import zmq

from ..control_client import ControlClient, MasterUnavailable, StatusFeed, ipc_problem
from ..errors import ConfigError
from .model import CONNECTED, UNREACHABLE, FarmModel

log = logging.getLogger("piwheels.monitor")

#: How long to wait before asking again when the master cannot be reached.
RETRY_INTERVAL_S = 2.0
#: The master publishes its summary every second; after this long without
#: one the monitor takes the master for gone and connects afresh.
MASTER_SILENCE_S = 5.0
#: The most status messages read in one poll, so the screen keeps up.
MAX_MESSAGES_PER_POLL = 500


@dataclass(frozen=True)
class Action:
    """One request to the master, and how to name it to the operator."""

    name: str
    payload: Optional[dict]
    what: str


class MasterLink:
    """Keeps a :class:`FarmModel` up to date from one master, and sends it actions."""

    def __init__(self, model: FarmModel, control_address: str, status_address: str, *,
                 timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.control_address = control_address
        self.status_address = status_address
        self.timeout_s = timeout_s
        self.clock = clock
        self.ctx = zmq.Context()
        try:
            self.control = ControlClient(control_address, timeout_s=timeout_s, ctx=self.ctx)
            self.feed = StatusFeed(status_address, ctx=self.ctx)
        except zmq.ZMQError as exc:
            self.ctx.destroy(linger=0)
            raise ConfigError(f"cannot use {control_address} and {status_address} "
                                    f"as the master's addresses: {exc}") from None
        self.current: Optional[Action] = None
        self.sent_s = 0.0
        self.retry_at_s = clock()
        self.last_master_s = 0.0
        self.queue: deque[Action] = deque()

    # --- the operator's side ------------------------------------------------------

    def ask(self, name: str, payload: Optional[dict], what: str) -> None:
        """Send *name* once the requests before it are answered; the answer becomes a notice."""
        now = self.clock()
        if self.model.link != CONNECTED:
            self.model.tell(f"{what}: not sent, as the master is not connected", now, error=True)
            return
        self.queue.append(Action(name, payload, what))
        self.model.tell(f"{what}: sent, waiting for the master's answer", now)
        self.poll()

    # --- the loop's side ---------------------------------------------------------------

    def poll(self) -> None:
        """Read what has arrived, send what is due; never waits."""
        now = self.clock()
        self._read_reply(now)
        self._read_feed(now)
        if self.model.link == CONNECTED:
            if now - self.last_master_s > MASTER_SILENCE_S:
                self._lost(f"no news from the master on {self.status_address} for "
                           f"{MASTER_SILENCE_S:.0f} s", now)
            else:
                self.model.forget_stale(now)
        if self.control.pending is not None:
            return
        if self.model.link == CONNECTED:
            if self.queue:
                self._send(self.queue.popleft(), now)
        elif now >= self.retry_at_s:
            self._connect(now)

    def close(self) -> None:
        self.control.close()
        self.feed.close()
        self.ctx.term()

    # --- helpers ------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        problem = ipc_problem(self.control_address) or ipc_problem(self.status_address)
        if problem:
            self._unreachable(problem, now)
            return
        self._send(Action("SNAPSHOT", None, "connect"), now)

    def _send(self, action: Action, now: float) -> None:
        try:
            self.control.send(action.name, action.payload)
        except MasterUnavailable as exc:
            self._lost(str(exc), now)
            return
        self.current, self.sent_s = action, now
        log.debug("sent %s (%s)", action.name, action.what)

    def _read_reply(self, now: float) -> None:
        if self.current is None:
            return
        try:
            answer = self.control.reply(0)
        except MasterUnavailable as exc:
            self._failed(str(exc), now)
            return
        if answer is None:
            if now - self.sent_s > self.timeout_s:
                self._failed(f"no answer on {self.control_address} within "
                             f"{self.timeout_s:g} s", now)
            return
        action, self.current = self.current, None
        name, payload = answer
        if action.name == "SNAPSHOT":
            if name == "SNAPSHOT":
                self.model.apply_snapshot(payload, now)
                self.model.set_link(CONNECTED, None, now)
                log.info("connected: %d slave(s)", len(payload["slaves"]))
                self.last_master_s = now
            else:
                self._unreachable(f"the master refused SNAPSHOT: {payload.get('message')}", now)
        elif name == "ERROR":
            log.warning("%s: refused: %s", action.what, payload["message"])
            self.model.tell(f"{action.what}: refused: {payload['message']}", now, error=True)
        else:
            log.info("%s: %s", action.what, payload.get("message"))
            self.model.tell(f"{action.what}: {payload.get('message') or 'done'}", now)

    def _read_feed(self, now: float) -> None:
        for _ in range(MAX_MESSAGES_PER_POLL):
            message = self.feed.poll(0)
            if message is None:
                return
            name, payload = message
            if self.model.link == UNREACHABLE and self.current is None:
                self.retry_at_s = now  # the master is back: ask for the whole picture
            if name == "MASTER":
                self.last_master_s = now
                if self._restarted(payload["master"]):
                    # a new master knows other slaves: take its whole picture again
                    self.queue.appendleft(Action("SNAPSHOT", None, "reload"))
            self.model.apply_status(name, payload, now)

    def _restarted(self, master: dict) -> bool:
        before = self.model.master.get("started_at")
        return (self.model.link == CONNECTED and before is not None
                and master.get("started_at") not in (None, before))

    def _failed(self, reason: str, now: float) -> None:
        """The request in flight got no (usable) answer."""
        action, self.current = self.current, None
        if action is not None and action.name != "SNAPSHOT":
            self.model.tell(f"{action.what}: {reason}; it may not have been done", now,
                            error=True)
        self._lost(reason, now)

    def _lost(self, reason: str, now: float) -> None:
        """Give up on this connection: fresh sockets, and try again soon."""
        self.control.reconnect()
        self.feed.reconnect()
        self.current = None
        for action in self.queue:
            self.model.tell(f"{action.what}: not sent, as the master went away", now, error=True)
        self.queue.clear()
        self._unreachable(reason, now)

    def _unreachable(self, reason: str, now: float) -> None:
        if (self.model.link, self.model.link_reason) != (UNREACHABLE, reason):
            log.warning("the master is not reachable: %s", reason)
        self.model.set_link(UNREACHABLE, reason, now)
        self.retry_at_s = now + RETRY_INTERVAL_S
