"""The master part of bench/scale.py: a real master on the seeded catalogue, driven by
zero-work slaves, while it rewrites every page; its RSS throughout.

The master runs in a child process as piw-master composes it
(:class:`piwheels.master.supervisor.Master`, every task), with one thing left
out: the start-up reconciliation of the output tree with the database, which
would find none of the seeded wheels on disk and re-queue every build.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import zmq

from piwheels.control_client import ControlClient
from piwheels.protocols import PROTOCOL_VERSION, SLAVE
from piwheels.transport import Socket

IDLE = {"stats": {"load_1m": 0.5, "memory_free": 10**9, "disk_free": 10**10,
                  "temperature_c": None}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_master(argv: list[str]) -> None:
    """The child: piw-master's main, without the start-up reconciliation (see above)."""
    from piwheels.master import main, supervisor
    from piwheels.master.reconcile import Reconciliation

    supervisor.reconcile = lambda db, tree, aliases=None: Reconciliation()
    raise SystemExit(main(argv))


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """A process's resident set (VmRSS) or its peak (VmHWM), from /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return found


def _slaves(port: int, count: int, targets: list, stop, results) -> None:
    """*count* zero-work slaves: each BUILD is answered at once with a failed BUILT.
    Sends back the monotonic time of every BUILD handed out."""
    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = {}
    for n in range(count):
        sock = Socket.make(ctx, zmq.DEALER, SLAVE)
        sock.connect(f"tcp://127.0.0.1:{port}")
        abi, platform = targets[n % len(targets)]
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": f"scale-{os.getpid()}-{n}",
            "python_tag": abi, "abi_tag": abi, "platform_tag": platform,
            "python_version": "3.11.2", "pip_version": "23.0", "os": "bench",
            "image": "e" * 64, "build_timeout_s": 3600, "building": None,
            "containment": "none: zero-work benchmark slave", "platforms": [platform],
        })
        socks[sock.zsocket] = sock
        poller.register(sock.zsocket, zmq.POLLIN)
    handed: list[float] = []
    while not stop.is_set():
        for zsocket, _ in poller.poll(100):
            sock = socks[zsocket]
            name, payload = sock.recv()
            if name == "BUILD":
                handed.append(time.monotonic())
                sock.send("BUILT", {
                    "package": payload["package"], "version": payload["version"],
                    "success": False, "duration_s": 0.0,
                    "log": "zero-work build\n", "reason": "benchmark", "files": [],
                })
            elif name in ("ACK", "DONE"):
                sock.send("IDLE", IDLE)
            elif name == "SLEEP":
                sock.send("IDLE", IDLE)
            elif name in ("DIE", "RESET"):
                results.put(("error", f"master said {name}: {payload}"))
                return
    results.put(("ok", handed))
    for sock in socks.values():
        sock.close()
    ctx.destroy(linger=0)


@dataclass
class Window:
    """Dispatch between two moments: BUILDs handed out per second, the longest pause."""

    start: float
    end: float
    builds: int = 0
    longest_pause_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.builds / max(self.end - self.start, 1e-9)


def window(times: list[float], start: float, end: float) -> Window:
    inside = [t for t in times if start <= t <= end]
    edges = [start, *inside, end]
    return Window(start, end, len(inside),
                  max(b - a for a, b in zip(edges, edges[1:])) if edges else 0.0)


@dataclass
class MasterRun:
    """What the master phase measured."""

    start_s: float = 0.0
    idle: Optional[Window] = None
    during: Optional[Window] = None
    rewrite_s: Optional[float] = None
    rewrite_done: bool = False
    projects_asked: int = 0
    rss_idle: int = 0
    rss_peak: int = 0           # the master process's VmHWM
    workers_peak: int = 0       # the largest sum of its children's RSS seen
    notes: list[str] = field(default_factory=list)


def run_master(dsn: str, output: Path, work: Path, targets: list, *, slaves: int,
               idle_s: float, rewrite_limit_s: float, say=print) -> MasterRun:
    """Start the master, dispatch for *idle_s*, then rewrite every page while
    dispatching (up to *rewrite_limit_s*); stop everything."""
    run = MasterRun()
    port, file_port = free_port(), free_port()
    control = f"ipc://{work}/control"
    argv = [
        "-q", "--dsn", dsn, "--output-path", str(output),
        "--pypi-simple", "http://127.0.0.1:1/simple/",
        "--slave-bind", f"tcp://127.0.0.1:{port}", "--file-bind", f"tcp://127.0.0.1:{file_port}",
        "--control-address", control, "--status-address", f"ipc://{work}/status",
        "--containment", "optional", "--sleep-interval", "0.05",
        "--log-file", str(work / "master.log"),
    ]
    spawn = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    master = spawn.Process(target=_run_master, args=(argv,), name="scale-master")
    master.start()
    client = ControlClient(control, timeout_s=30)
    stop, results = spawn.Event(), spawn.Queue()
    drivers = []
    try:
        while True:
            if not master.is_alive():
                raise RuntimeError(f"the master stopped (see {work / 'master.log'})")
            try:
                client.request("SNAPSHOT")
                break
            except Exception:
                client.reconnect()
                time.sleep(0.5)
        run.start_s = time.perf_counter() - started
        say(f"  master answering after {run.start_s:.1f} s; {slaves} zero-work slaves start")
        drivers = [spawn.Process(target=_slaves, args=(port, slaves // 2, [tuple(t) for t in targets], stop,
                                                        results)) for _ in range(2)]
        for proc in drivers:
            proc.start()
        time.sleep(5)  # greetings, the first queue
        idle_from = time.monotonic()
        time.sleep(idle_s)
        idle_to = time.monotonic()
        run.rss_idle = rss_bytes(master.pid)
        reply, payload = client.request("REBUILD", {"part": "all", "package": None})
        rewrite_from = time.monotonic()
        say(f"  rewriting every page ({payload['message']})")
        rewrite_to = None
        while time.monotonic() - rewrite_from < rewrite_limit_s:
            time.sleep(2)
            run.workers_peak = max(run.workers_peak,
                                   sum(rss_bytes(pid) for pid in children(master.pid)))
            name, snap = client.request("SNAPSHOT")
            rebuild = snap["master"].get("rebuild") or {}
            run.projects_asked = rebuild.get("total", 0)
            if rebuild.get("settled") and rebuild.get("pending") == 0 \
                    and not rebuild.get("root_pending"):
                rewrite_to = time.monotonic()
                break
        run.rewrite_done = rewrite_to is not None
        if rewrite_to is None:
            rewrite_to = time.monotonic()
            run.notes.append(f"the rewrite was not done after {rewrite_limit_s:.0f} s "
                             f"({rebuild.get('pending')} projects still to write)")
        run.rewrite_s = rewrite_to - rewrite_from
        run.rss_peak = rss_bytes(master.pid, "VmHWM")
        stop.set()
        handed: list[float] = []
        for _ in drivers:
            status, value = results.get(timeout=60)
            if status != "ok":
                raise RuntimeError(value)
            handed.extend(value)
        handed.sort()
        run.idle = window(handed, idle_from, idle_to)
        run.during = window(handed, rewrite_from, rewrite_to)
    finally:
        stop.set()
        for proc in drivers:
            proc.join(30)
        client.sock.close()
        if master.is_alive():
            os.kill(master.pid, 15)
        master.join(120)
    return run
