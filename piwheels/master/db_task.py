"""A master task that owns one database connection.

The connection is opened in the task's own thread before
:meth:`~piwheels.master.task.Task.on_start` and closed after
:meth:`~piwheels.master.task.Task.on_stop`, so both hooks may use it.
(Kept apart from :mod:`piwheels.master.task` so the actor base never imports
the data layer.)
"""

from __future__ import annotations

import time
from typing import Optional

import zmq

from ..db import Database
from .task import Clock, Task


class DatabaseTask(Task):
    """A :class:`Task` with :attr:`db`, its own connection to *dsn*."""

    def __init__(self, ctx: zmq.Context, *, dsn: str, clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, clock=clock)
        self.dsn = dsn
        #: None until the task's thread has started (and if connecting failed)
        self.db: Optional[Database] = None

    def open_resources(self) -> None:
        self.db = Database(self.dsn)

    def close_resources(self) -> None:
        if self.db is not None:
            self.db.close()
