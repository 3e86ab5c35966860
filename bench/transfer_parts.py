"""What bench/transfer.py's runs share: wheels to send, the link, keys, CPU counters."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import os
import socket
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from piwheels.keys import PUBLIC_SUFFIX, KeyPair, load_key_pair, make_key_pair, public_path
from piwheels.transport import CurveClient

MB = 1024 * 1024
CLONE_NEWNET = 0x40000000


def make_wheel(directory: Path, size: int, *, name: str = "bench-blob", version: str = "1.0",
               blob: Optional[bytes] = None) -> Path:
    """A valid pure wheel of about *size* bytes: *blob* (default: random data), stored,
    so it does not shrink."""
    stem = name.replace("-", "_")
    path = directory / f"{stem}-{version}-py3-none-any.whl"
    info = f"{stem}-{version}.dist-info"
    members = {
        f"{stem}/blob.bin": os.urandom(size) if blob is None else blob,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for member, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{member},sha256={digest},{len(data)}\n"
    record += f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- CPU -------------------------------------------------------------------------------


def task_cpu_s(pid: int) -> float:
    """CPU seconds the live threads of process *pid* have run (nanosecond counters)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return total / 1e9


def children_of(pid: int) -> list[int]:
    """The live descendants of *pid*."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s(pid: int, exclude: tuple[int, ...] = ()) -> float:
    """CPU seconds of process *pid* and its live descendants, but *exclude* and theirs
    (read before and after a run: threads and processes must live through it)."""
    skip = set(exclude)
    for excluded in exclude:
        skip.update(children_of(excluded))
    return sum(task_cpu_s(p) for p in [pid, *children_of(pid)] if p not in skip)


# --- where the slave runs ------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """Where the slave's side runs: beside the master on loopback, or in a network
    namespace of its own (see :func:`shaped_link`)."""

    master_host: str = "127.0.0.1"
    slave_namespace: Optional[str] = None

    def enter_slave_side(self) -> None:
        """Called first in the slave's (forked, single-threaded) process."""
        if self.slave_namespace is None:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self.slave_namespace}") as namespace:
            if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the slave's namespace failed")


@contextlib.contextmanager
def shaped_link(mbit: int) -> Iterator[Link]:
    """A veth pair into a fresh network namespace, each way limited to *mbit* Mbit/s."""
    namespace = f"piw-bench-{os.getpid()}"
    master_dev, slave_dev = f"piwm{os.getpid()}", f"piws{os.getpid()}"
    master_ip, slave_ip = "10.213.0.1", "10.213.0.2"
    shape = ["root", "tbf", "rate", f"{mbit}mbit", "burst", "512kb", "latency", "50ms"]
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for command in (
            ["ip", "link", "add", master_dev, "type", "veth", "peer", "name", slave_dev,
             "netns", namespace],
            ["ip", "addr", "add", f"{master_ip}/30", "dev", master_dev],
            ["ip", "link", "set", master_dev, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{slave_ip}/30", "dev", slave_dev],
            ["ip", "-n", namespace, "link", "set", slave_dev, "up"],
            ["tc", "qdisc", "add", "dev", master_dev, *shape],
            ["tc", "-n", namespace, "qdisc", "add", "dev", slave_dev, *shape],
        ):
            subprocess.run(command, check=True)
        yield Link(master_ip, namespace)
    finally:  # the pair goes with the namespace
        subprocess.run(["ip", "netns", "del", namespace], check=False)


@dataclass(frozen=True)
class Keys:
    """A farm's keys for one run: the master's pair, the slave's key file (enrolled)."""

    master: KeyPair
    master_secret: Path
    slave_secret: Path
    enrolled: Path

    @classmethod
    def make(cls, directory: Path) -> "Keys":
        master_secret = directory / "master.key_secret"
        master, _ = make_key_pair(master_secret)
        slave_secret = directory / "slave" / "bench.key_secret"
        make_key_pair(slave_secret)
        enrolled = directory / "authorized"
        enrolled.mkdir()
        (enrolled / f"bench{PUBLIC_SUFFIX}").write_bytes(public_path(slave_secret).read_bytes())
        return cls(master, master_secret, slave_secret, enrolled)

    def client(self) -> CurveClient:
        return CurveClient(keys=load_key_pair(self.slave_secret), server_public=self.master.public)

    def key_id(self) -> str:
        return load_key_pair(self.slave_secret).key_id

    def master_args(self) -> list[str]:
        """piw-master's options for these keys."""
        return ["--master-key", str(self.master_secret), "--authorized-keys", str(self.enrolled)]
