"""The monitor's loop: keys to actions, and the screen refreshed a few times a second."""

from __future__ import annotations

import time
from typing import Callable, Optional

import urwid

from .link import MasterLink
from .model import FarmModel
from .view import PALETTE, MonitorView

#: How often the monitor reads what the master sent and redraws.
TICK_S = 0.2

# key -> (action of the SLAVE message, on every slave?)
SLAVE_KEYS = {
    "p": ("pause", False), "r": ("resume", False), "s": ("skip", False), "x": ("stop", False),
    "P": ("pause", True), "R": ("resume", True), "S": ("skip", True), "X": ("stop", True),
}
VERBS = {"pause": "pause", "resume": "resume", "skip": "skip the build of", "stop": "stop"}


class Monitor:
    """Ties the link to the master, the model and the screen together."""

    def __init__(self, link: MasterLink, model: FarmModel, view: MonitorView, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.model = model
        self.view = view
        self.clock = clock
        self.wall_clock = wall_clock
        self.confirmed: Optional[Callable[[], None]] = None
        self.loop: Optional[urwid.MainLoop] = None

    def run(self) -> None:
        self.loop = urwid.MainLoop(self.view.top, PALETTE, unhandled_input=self.on_key,
                                   handle_mouse=False)
        self.loop.set_alarm_in(0, self.tick)
        self.loop.run()

    def tick(self, loop: urwid.MainLoop, _=None) -> None:
        self.link.poll()
        self.redraw()
        loop.set_alarm_in(TICK_S, self.tick)

    def redraw(self) -> None:
        self.view.show(self.model, self.clock(), self.wall_clock())

    # --- keys ---------------------------------------------------------------------

    def on_key(self, key) -> bool:
        if self.view.question is not None:
            self._answer(key)
        elif key == "q":
            raise urwid.ExitMainLoop()
        elif key in SLAVE_KEYS:
            self.slave_action(*SLAVE_KEYS[key])
        elif key == "m":
            if self.model.master_paused:
                self.link.ask("RESUME", None, "resume the master")
            else:
                self.link.ask("PAUSE", None, "pause the master")
        elif key == "Q":
            self.confirm("Stop the master?  Slaves keep their builds and wait for it to "
                         "come back.", lambda: self.link.ask("QUIT", None, "stop the master"))
        else:
            return False
        self.redraw()
        return True

    def _answer(self, key) -> None:
        if key in ("y", "Y"):
            action, self.confirmed = self.confirmed, None
            self.view.dismiss()
            action()
        elif key in ("n", "N", "esc"):
            self.confirmed = None
            self.view.dismiss()
            self.model.tell("nothing was done", self.clock())

    def confirm(self, question: str, action: Callable[[], None]) -> None:
        self.confirmed = action
        self.view.ask(question)

    def slave_action(self, action: str, every_slave: bool) -> None:
        if every_slave:
            slave_id, who = None, "every slave"
        else:
            slave_id = self.view.selected_id()
            if slave_id is None:
                self.model.tell(f"{action}: no slave is selected", self.clock(), error=True)
                return
            record = self.model.slaves.get(slave_id)
            who = f"slave {slave_id} ({record.label if record else 'gone'})"
        what = f"{VERBS[action]} {who}"

        def send() -> None:
            self.link.ask("SLAVE", {"action": action, "slave_id": slave_id}, what)

        if action == "stop":
            self.confirm(f"Stop {who}?  Builds under way are abandoned and piw-slave "
                         "exits (systemd may start it again).", send)
        else:
            send()
