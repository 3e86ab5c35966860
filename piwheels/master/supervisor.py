"""The master's supervisor: starts the tasks in order, watches them, stops them.

The master is a handful of tasks (threads), each owning its sockets and
talking to the others only through messages.  The supervisor stops them all
cleanly on request (SIGTERM/SIGINT in piw-master) or when one fails; then the
exit status is non-zero, for systemd to restart the master.
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import zmq

from ..allow_list import AllowList
from ..db import Database
from ..errors import ConfigError, PiwheelsError
from ..index_pages import Site
from ..protocols import INDEX_REQUESTS, SUPERVISOR
from ..pypi_client import PyPIClient
from ..settings import MasterConfig
from ..storage import SIMPLE_DIR, OutputTree
from ..systemd import SystemdNotifier
from ..transport import PeerLimits, ProtocolError, Socket
from ..wheel_facts import UnpackLimits
from .admin_service import AdminService
from .authenticator import Authenticator
from .build_queue import BuildQueue
from .build_recorder import BuildRecorder
from .file_receiver import FileReceiver
from .index_writer import IndexWriter
from .pypi_follower import PyPIFollower
from .reconcile import reconcile
from .slave_driver import SlaveDriver
from .stats import Stats
from .task import Task, TaskControl

log = logging.getLogger("piwheels.master")

#: How long the master waits for each task to finish when stopping.
TASK_STOP_TIMEOUT_S = 10.0
#: Messages a slave may have queued on its socket (it speaks one at a time;
#: heartbeats may pile up behind a message the driver is handling).
SLAVE_QUEUE = 8


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; the limit in force.

    Every TCP connection a peer opens takes a descriptor inside libzmq, so a
    soft limit of 1024 (a common default) lets ~1,000 idle connections stop
    the master's own file writes with EMFILE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
            return soft
        log.info("open-file limit raised from %d to %d", soft, hard)
        return hard
    log.info("open-file limit: %d", soft)
    return soft


class StartupFailed(PiwheelsError):
    """A task could not start; the message names it and says why."""


def prepare_output_path(tree: OutputTree) -> None:
    """Make the directories of the output tree the master writes at start (its
    top, simple/ and .transfers/), or say in one line why it cannot hold them.

    Writing is tried, not inferred from permission bits: root passes those,
    and a read-only mount does not show in them.
    """
    path = tree.root
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output-path {path} is not a directory")
    for directory in (path, tree.simple, tree.transfers):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".piw-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"--output-path {path} cannot be used: cannot write in "
                              f"{directory}: {exc.strerror or exc}") from None


class Master:
    """Starts, supervises and stops the master's tasks."""

    def __init__(self, options: MasterConfig) -> None:
        self.options = options
        self.allow = AllowList.from_options(options.package_allow, options.package_allow_file)
        self.build_policy = options.policy
        self.output_path = Path(options.output_path)
        self.tree = OutputTree(self.output_path)
        self.notifier = SystemdNotifier()
        self._stop = threading.Event()
        self.failed: Optional[str] = None
        self.tasks: list[Task] = []
        self.authenticator: Optional[Authenticator] = None

    def make_tasks(self, ctx: zmq.Context) -> list[Task]:
        """The tasks in start order: each binds what later ones connect to."""
        o = self.options
        curve = o.curve
        peers = PeerLimits(handshake_s=o.handshake_timeout_s,
                           keepalive_idle_s=o.heartbeat_interval_s * o.slave_liveness,
                           keepalive_interval_s=o.heartbeat_interval_s, queue=SLAVE_QUEUE)
        unpack = UnpackLimits(max_unpacked=o.max_unpacked_size,
                              max_ratio=o.max_compression_ratio)
        site = Site(name=o.site_name, index_url=f"{o.public_url.rstrip('/')}/{SIMPLE_DIR}/",
                    upstream_simple=o.pypi_simple, platform_aliases=o.platform_aliases)
        return [
            AdminService(
                ctx, dsn=o.dsn, control_address=o.control_address,
                status_address=o.status_address, output_path=self.output_path,
                max_wheel_size=o.max_wheel_size, unpack_limits=unpack,
            ),
            Stats(ctx, dsn=o.dsn, output_path=self.output_path,
                  min_free_bytes=o.min_free_bytes, interval_s=o.stats_interval_s),
            IndexWriter(ctx, dsn=o.dsn, output_path=self.output_path, site=site,
                        summary_interval_s=o.summary_interval_s),
            BuildRecorder(ctx, dsn=o.dsn, output_path=self.output_path,
                          smoke_policy=o.smoke_policy),
            BuildQueue(ctx, dsn=o.dsn, queue_size=o.queue_size, interval_s=o.queue_interval_s,
                       newest_first=not o.oldest_first,
                       build_upstream_wheels=o.build_upstream_wheels),
            FileReceiver(
                ctx, file_bind=o.file_bind, output_path=self.output_path,
                chunk_size=o.chunk_size, window=o.transfer_window,
                timeout_s=o.transfer_timeout_s, retries=o.transfer_retries,
                max_wheel_size=o.max_wheel_size, deadline_s=o.transfer_deadline_s,
                unpack_limits=unpack, peers=peers, curve=curve,
            ),
            SlaveDriver(
                ctx, slave_bind=o.slave_bind, index_url=o.pypi_simple,
                heartbeat_s=o.heartbeat_interval_s, liveness=o.slave_liveness,
                sleep_s=o.sleep_interval_s, retry_delay_s=o.retry_delay_s, peers=peers,
                curve=curve, containment_required=o.containment_required,
            ),
            PyPIFollower(
                ctx, dsn=o.dsn,
                client=PyPIClient(simple_url=o.pypi_simple, json_url=o.pypi_json or None,
                                  xmlrpc_url=o.pypi_xmlrpc or None),
                allow=self.allow, poll_interval_s=o.poll_interval_s,
                reconcile_interval_s=o.reconcile_interval_s,
            ),
        ]

    def stop(self) -> None:
        """Ask the master to stop (safe from any thread or a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start every task, report READY once all run, supervise until stopped.

        Whatever stops the start (an unusable output path, an unreachable
        database, an address that cannot be bound, a task failing to start) is
        raised as one :class:`~piwheels.errors.PiwheelsError`, before READY.
        """
        prepare_output_path(self.tree)
        with Database(self.options.dsn) as db:
            db.check_schema_version()
            log.info(db.apply_configured_policy(self.build_policy,
                                                self.options.build_prereleases))
            self.tree.simple.mkdir(parents=True, exist_ok=True)
            # before any task runs: nothing is being received or published now
            reconciled = reconcile(db, self.tree, self.options.platform_aliases)
        raise_fd_limit()
        ctx = zmq.Context()
        supervisor = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
        index = Socket.make(ctx, zmq.PUSH, INDEX_REQUESTS)
        try:
            supervisor.bind(SUPERVISOR.address)
            if self.options.enrolled_dir is not None:
                # before the slave and file sockets bind: no handshake goes unchecked
                self.authenticator = Authenticator(ctx, self.options.enrolled_dir)
                self.authenticator.start()
            self.tasks = self.make_tasks(ctx)  # they bind here: a bad address raises
        except BaseException:
            if self.authenticator is not None:
                self.authenticator.stop()
            ctx.destroy(linger=0)  # also closes the sockets of the tasks already made
            raise
        controls: list[TaskControl] = []
        started = False
        try:
            for task in self.tasks:
                task.start()
                controls.append(TaskControl(ctx, task.name))
                if not self._await_start(supervisor, task):
                    break
            else:
                started = True
            if started:
                self._rewrite_pages(index, reconciled.packages)
                log.info("master started: slaves on %s, files on %s (%s), output in %s",
                         self.options.slave_bind, self.options.file_bind, self._security(),
                         self.output_path)
                self.notifier.ready()
                self._supervise(supervisor)
        finally:
            self.notifier.stopping()
            # one at a time, last started first: what a task hands over as it
            # stops (the slave driver's unrecorded attempts, say) still finds
            # the tasks it talks to running
            deadline = time.monotonic() + TASK_STOP_TIMEOUT_S
            for task, control in reversed(list(zip(self.tasks, controls))):
                control.send("QUIT")
                task.join(max(0.1, deadline - time.monotonic()))
                if task.is_alive():
                    log.error("task %s did not stop in time", task.name)
            for control in controls:
                control.close()
            supervisor.close()
            index.close()
            if self.authenticator is not None:
                self.authenticator.stop()
            # a task still running, or never started, has sockets open: term() would wait
            if any(task.is_alive() or task.ident is None for task in self.tasks):
                ctx.destroy(linger=0)
            else:
                ctx.term()
        if started:
            log.info("master stopped")
        return 1 if self.failed else 0

    def _security(self) -> str:
        """How the slave and file sockets are guarded, for the start-up line."""
        if self.options.master_key is not None:
            return (f"CURVE: master key {self.options.curve.keys.key_id}, enrolled keys in "
                    f"{self.options.enrolled_dir}")
        if self.options.open_farm:
            return "open farm: no keys, any slave is taken"
        return "no keys: loopback only"

    @staticmethod
    def _rewrite_pages(index: Socket, packages: set[str]) -> None:
        """Ask the index writer for the pages of the projects the reconciliation changed."""
        index.connect(INDEX_REQUESTS.address)
        for package in sorted(packages):
            try:
                index.send("PACKAGE", {"package": package}, flags=zmq.NOBLOCK)
            except (ValueError, zmq.Again) as exc:  # a directory no project has
                log.warning("not rewriting the pages of %r: %s", package, exc)
    def _await_start(self, supervisor: Socket, task: Task) -> bool:
        """Wait for *task*'s STARTED; False if asked to stop meanwhile.

        Tasks start one at a time, so one that fails stops the start before
        the later ones do anything; it raises :class:`StartupFailed` with the
        task's reason.
        """
        while not self._stop.is_set():
            if supervisor.zsocket.poll(200):
                try:
                    name, payload = supervisor.recv()
                except ProtocolError as exc:
                    log.error("bad supervisor message: %s", exc)
                    continue
                if name == "STARTED" and payload["task"] == task.name:
                    return True
                if name == "FAILED":
                    error = (payload["error"].strip().splitlines() or ["no reason given"])[0]
                    self.failed = f"{payload['task']}: {error}"
                    raise StartupFailed(f"the master could not start its {self.failed}")
                if name == "QUIT":
                    log.info("stopping: %s", payload["reason"])
                    return False
            elif not task.is_alive():
                self.failed = f"task {task.name} stopped before it started"
                raise StartupFailed(f"the master could not start: {self.failed}")
        return False

    def _supervise(self, supervisor: Socket) -> None:
        poller = zmq.Poller()
        poller.register(supervisor.zsocket, zmq.POLLIN)
        watchdog_s = self.notifier.watchdog_interval_s
        next_watchdog = time.monotonic()
        while not self._stop.is_set():
            if poller.poll(200):
                try:
                    name, payload = supervisor.recv()
                except ProtocolError as exc:
                    log.error("bad supervisor message: %s", exc)
                    continue
                if name == "FAILED":
                    self.failed = f"{payload['task']}: {payload['error'].strip()}"
                    log.critical("stopping: task %s", self.failed)
                    return
                if name == "QUIT":
                    log.info("stopping: %s", payload["reason"])
                    return
            dead = [task.name for task in self.tasks if not task.is_alive()]
            if self.authenticator is not None and not self.authenticator.is_alive():
                dead.append("authenticator (ZAP)")
            if dead and supervisor.zsocket.poll(1000):
                continue  # most likely the dead task's FAILED: read it for the reason
            if dead:
                self.failed = f"task {', '.join(dead)} stopped unexpectedly"
                log.critical("stopping: %s", self.failed)
                return
            if watchdog_s is not None and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + watchdog_s


