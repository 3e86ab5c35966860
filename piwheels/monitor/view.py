"""The monitor's screen (urwid): the master panel, the slave table, the keys.

::

    piwheels monitor                                    (header)
    connected to the master at ipc:///run/piwheels/control
    ┌ Master / Queue / Builds / Transfers / Host / Index ┐
    State  Id  Label  ABI  Platform  Uptime  Build  Time  Seen  Load
    one selectable row per slave                        (scrolls)
    the answer to the last action                       (notice)
    selected slave, and the keys                        (footer)

A confirmation dialog covers the screen before anything is stopped.
"""

from __future__ import annotations

from typing import Optional

import urwid

from .formatting import (
    SLAVE_COLUMNS, Markup, link_line, master_lines, slave_cells, slave_details,
)
from .model import FarmModel

PALETTE = [
    ("header", "white,bold", "dark blue"),
    ("footer", "black", "light gray"),
    ("key", "dark blue,bold", "light gray"),
    ("title", "bold", ""),
    ("value", "", ""),
    ("dim", "dark gray", ""),
    ("good", "light green", ""),
    ("warn", "yellow,bold", ""),
    ("bad", "white,bold", "dark red"),
    ("notice", "light green", ""),
    ("notice_error", "light red,bold", ""),
    ("selected", "black", "light gray"),
    ("state_idle", "light green", ""),
    ("state_parked", "dark cyan", ""),
    ("state_sleeping", "dark cyan", ""),
    ("state_building", "yellow,bold", ""),
    ("state_sending", "light cyan,bold", ""),
    ("state_paused", "light magenta,bold", ""),
    ("dialog", "white", "dark blue"),
]

#: Every attribute of a slave row turns to "selected" on the row the cursor is on.
FOCUS_MAP = {name: "selected" for name, *_ in PALETTE}
FOCUS_MAP[None] = "selected"

KEYS = (
    ("Up/Down", "select"), ("p", "pause"), ("r", "resume"), ("s", "skip build"),
    ("x", "stop"), ("P R S X", "the same for every slave"),
)


class SlaveRow(urwid.WidgetWrap):
    """One slave's line; selectable, so the cursor can rest on it."""

    def __init__(self, slave_id: int) -> None:
        self.slave_id = slave_id
        self.cells = [urwid.Text("", wrap="clip") for _ in SLAVE_COLUMNS]
        super().__init__(urwid.AttrMap(_columns(self.cells), None, focus_map=FOCUS_MAP))

    def selectable(self) -> bool:
        return True

    def keypress(self, size, key):
        return key

    def update(self, cells: list[tuple[str, str]]) -> None:
        for cell, markup in zip(self.cells, cells):
            cell.set_text(markup)


def _columns(cells: list[urwid.Widget]) -> urwid.Columns:
    return urwid.Columns(
        [("weight", 1, cell) if width is None else (width, cell)
         for cell, (_, width) in zip(cells, SLAVE_COLUMNS)],
        dividechars=1)


class MonitorView:
    """The widgets, and how the model is shown on them."""

    def __init__(self, control_address: str) -> None:
        self.control_address = control_address
        self.link = urwid.Text("")
        self.master = urwid.Text("")
        self.walker = urwid.SimpleFocusListWalker([])
        self.rows: dict[int, SlaveRow] = {}
        self.nobody = urwid.Text(("dim", "no slaves connected"))
        self.notice = urwid.Text("")
        self.selection = urwid.Text("")
        self.keys = urwid.Text("")
        headings = _columns([urwid.Text(("title", title), wrap="clip")
                             for title, _ in SLAVE_COLUMNS])
        body = urwid.Pile([
            ("pack", self.link),
            ("pack", urwid.LineBox(self.master, title="Master")),
            ("pack", headings),
            ("weight", 1, urwid.ListBox(self.walker)),
        ], focus_item=3)
        footer = urwid.Pile([
            self.notice,
            urwid.AttrMap(urwid.Pile([self.selection, self.keys]), "footer"),
        ])
        header = urwid.AttrMap(urwid.Text("piwheels monitor"), "header")
        self.frame = urwid.Frame(body, header=header, footer=footer)
        self.top = urwid.WidgetPlaceholder(self.frame)
        self.question: Optional[str] = None

    # --- showing the model ----------------------------------------------------------

    def show(self, model: FarmModel, now_s: float, wall_now: float) -> None:
        self.link.set_text(link_line(model, self.control_address, now_s))
        self.master.set_text(_lines(master_lines(model, now_s, wall_now)))
        self._show_slaves(model, now_s, wall_now)
        if model.notice is None:
            self.notice.set_text("")
        else:
            self.notice.set_text(("notice_error" if model.notice.error else "notice",
                                  model.notice.text))
        selected = self.selected_id()
        if selected is None:
            self.selection.set_text(" no slave selected")
        else:
            record = model.slaves.get(selected)
            details = f": {slave_details(record)}" if record else ""
            self.selection.set_text(
                f" selected: slave {selected} ({record.label if record else 'gone'}){details}")
        master_key = "resume master" if model.master_paused else "pause master"
        self.keys.set_text(_keys([*KEYS, ("m", master_key), ("Q", "stop master"),
                                  ("q", "quit")]))

    def _show_slaves(self, model: FarmModel, now_s: float, wall_now: float) -> None:
        records = model.sorted_slaves()
        ids = [record.slave_id for record in records]
        if ids != [row.slave_id for row in self.walker if isinstance(row, SlaveRow)] \
                or (not ids and not self.walker):
            selected = self.selected_id()
            position = self.walker.focus or 0
            self.rows = {slave_id: self.rows.get(slave_id) or SlaveRow(slave_id)
                         for slave_id in ids}
            self.walker[:] = [self.rows[slave_id] for slave_id in ids] or [self.nobody]
            if selected in self.rows:
                self.walker.set_focus(ids.index(selected))
            elif ids:
                self.walker.set_focus(min(position, len(ids) - 1))
        for record in records:
            self.rows[record.slave_id].update(slave_cells(record, now_s, wall_now))

    def selected_id(self) -> Optional[int]:
        """The slave the cursor is on."""
        if not self.walker:
            return None
        row = self.walker.get_focus()[0]
        return row.slave_id if isinstance(row, SlaveRow) else None

    # --- the confirmation dialog ----------------------------------------------------------

    def ask(self, question: str) -> None:
        self.question = question
        dialog = urwid.LineBox(urwid.Pile([
            urwid.Text(question),
            urwid.Divider(),
            urwid.Text([("key", "y"), " yes    ", ("key", "n"), " or ", ("key", "Esc"),
                        " no"], align="center"),
        ]), title="Please confirm")
        self.top.original_widget = urwid.Overlay(
            urwid.AttrMap(dialog, "dialog"), self.frame, "center", ("relative", 60),
            "middle", "pack")

    def dismiss(self) -> None:
        self.question = None
        self.top.original_widget = self.frame


def _lines(lines: list[Markup]) -> Markup:
    joined: Markup = []
    for number, line in enumerate(lines):
        if number:
            joined.append("\n")
        joined.extend(line)
    return joined


def _keys(keys) -> Markup:
    markup: Markup = []
    for key, meaning in keys:
        markup += [" ", ("key", key), f" {meaning} "]
    return markup
