"""The actor base: timers, control messages, failure reporting."""

from __future__ import annotations

import threading
from pathlib import Path

import zmq

from piwheels.master.task import Task, TaskControl
from piwheels.protocols import SUPERVISOR
from piwheels.transport import Socket


class Ticker(Task):
    name = "ticker"

    def __init__(self, ctx, *, fail_after=None):
        super().__init__(ctx)
        self.ticks = 0
        self.fail_after = fail_after
        self.events: list[str] = []
        self.ticked = threading.Event()
        self.every(0.01, self.tick)

    def tick(self):
        if self.paused:
            return
        self.ticks += 1
        self.ticked.set()
        if self.fail_after is not None and self.ticks >= self.fail_after:
            raise RuntimeError("boom")

    def on_pause(self):
        self.events.append("pause")

    def on_resume(self):
        self.events.append("resume")

    def on_stop(self):
        self.events.append("stop")


def supervisor(ctx):
    sock = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
    sock.bind(SUPERVISOR.address)
    return sock


def test_timers_pause_resume_quit():
    ctx = zmq.Context()
    sup = supervisor(ctx)
    task = Ticker(ctx)
    control = TaskControl(ctx, "ticker")
    try:
        task.start()
        assert task.ticked.wait(5)
        control.send("PAUSE")
        control.send("RESUME")
        control.send("QUIT")
        task.join(5)
        assert not task.is_alive()
        assert task.events == ["pause", "resume", "stop"]
        assert task.ticks >= 1
    finally:
        control.close()
        sup.close()
        ctx.destroy(linger=0)


def test_failure_is_reported_to_the_supervisor():
    ctx = zmq.Context()
    sup = supervisor(ctx)
    task = Ticker(ctx, fail_after=3)
    try:
        task.start()
        task.join(5)
        assert not task.is_alive()
        assert sup.zsocket.poll(5000)
        assert sup.recv() == ("STARTED", {"task": "ticker"})
        assert sup.zsocket.poll(5000)
        name, payload = sup.recv()
        assert name == "FAILED"
        assert payload["task"] == "ticker" and "boom" in payload["error"]
        assert task.events == ["stop"]
    finally:
        sup.close()
        ctx.destroy(linger=0)


def test_no_task_shadows_the_actor_api():
    """A task's ``self.status = socket`` once hid Task.status() and killed the master."""
    import ast
    import inspect

    import piwheels.master as master_pkg
    from piwheels.master.task import Task

    from piwheels.master.db_task import DatabaseTask

    api = {name for name in dir(DatabaseTask) if not name.startswith("__")}
    base = {node.attr for cls in (Task, DatabaseTask)
            for node in ast.walk(ast.parse(inspect.getsource(cls)))
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)}
    clashes = []
    checked = 0
    for path in Path(master_pkg.__file__).parent.glob("*.py"):
        if path.name in ("task.py", "db_task.py"):
            continue
        tasks = [node for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ClassDef)
                 and any(isinstance(b, ast.Name) and b.id in ("Task", "DatabaseTask")
                         for b in node.bases)]
        checked += len(tasks)
        for node in (n for task in tasks for n in ast.walk(task)):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and (node.attr in api or node.attr in base - {"paused"})):
                clashes.append(f"{path.name}:{node.lineno} self.{node.attr}")
    assert not clashes
    assert checked >= 8  # every master task was looked at


def test_log_limited_logs_a_kind_once_a_minute_and_counts_the_rest(caplog):
    import logging

    from piwheels.master.task import LIMITED_LOG_INTERVAL_S

    ctx = zmq.Context()
    now = [1000.0]
    try:
        task = Task(ctx, clock=lambda: now[0])
        with caplog.at_level(logging.WARNING, logger="piwheels.master.task"):
            assert task.log_limited("bad", logging.WARNING, "refused %s", "one")
            assert not task.log_limited("bad", logging.WARNING, "refused %s", "two")
            assert not task.log_limited("bad", logging.WARNING, "refused %s", "three")
            assert task.log_limited("other", logging.WARNING, "refused %s", "else")
            now[0] += LIMITED_LOG_INTERVAL_S
            assert task.log_limited("bad", logging.WARNING, "refused %s", "four")
        assert [r.getMessage() for r in caplog.records] == [
            "refused one", "refused else", "refused four (2 more like it not logged)"]
    finally:
        ctx.destroy(linger=0)


def test_a_database_task_has_its_connection_from_on_start_to_after_on_stop(master_dsn):
    from piwheels.master.db_task import DatabaseTask

    class Reader(DatabaseTask):
        name = "reader"

        def __init__(self, ctx):
            super().__init__(ctx, dsn=master_dsn)
            self.serials: list[int] = []

        def on_start(self):
            self.serials.append(self.db.get_pypi_serial())

        def on_stop(self):
            self.serials.append(self.db.get_pypi_serial())
            self.pooled_at_stop = self.db._engine.pool.checkedin()

    ctx = zmq.Context()
    sup = supervisor(ctx)
    control = TaskControl(ctx, "reader")
    task = Reader(ctx)
    try:
        assert task.db is None  # opened in the task's own thread
        task.start()
        assert sup.zsocket.poll(5000) and sup.recv() == ("STARTED", {"task": "reader"})
        control.send("QUIT")
        task.join(5)
        assert not task.is_alive()
        assert len(task.serials) == 2 and task.pooled_at_stop == 1
        assert task.db._engine.pool.checkedin() == 0  # closed after on_stop
    finally:
        control.close()
        sup.close()
        ctx.destroy(linger=0)


def test_a_database_task_that_cannot_connect_reports_it_and_stops():
    from piwheels.master.db_task import DatabaseTask

    class Reader(DatabaseTask):
        name = "reader"

        def on_start(self):
            raise AssertionError("on_start ran without a database")

    ctx = zmq.Context()
    sup = supervisor(ctx)
    task = Reader(ctx, dsn="postgresql://nobody@127.0.0.1:1/none")
    try:
        task.start()
        task.join(10)
        assert not task.is_alive()
        assert sup.zsocket.poll(5000)
        name, payload = sup.recv()
        assert name == "FAILED" and payload["task"] == "reader"
        assert "on_start ran" not in payload["error"] and task.db is None
    finally:
        sup.close()
        ctx.destroy(linger=0)
