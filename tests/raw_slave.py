"""A slave driven by hand for tests that play a misbehaving (or lying) builder
against a real master: real protocol messages, at the pace the test chooses."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Optional

import zmq
from farm import CLAIMED_CONTAINMENT

from piwheels.protocols import FILE_TRANSFER, PROTOCOL_VERSION, SLAVE
from piwheels.transport import Socket
from piwheels.wheel_facts import inspect_wheel, sha256_file

#: The platform a raw slave says it builds for (whatever the machine: it builds nothing).
RAW_PLATFORM = "linux_x86_64"
STATS = {"load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}


class RawSlave:
    """A slave driven by hand: real protocol messages, at the pace the test chooses."""

    def __init__(self, ctx: zmq.Context, farm, label: str = "raw") -> None:
        self.ctx = ctx
        curve = farm.curve_client(label)
        self.sock = Socket.make(ctx, zmq.DEALER, SLAVE, curve_client=curve)
        self.sock.connect(f"tcp://127.0.0.1:{farm.slave_port}")
        self.files = Socket.make(ctx, zmq.DEALER, FILE_TRANSFER, curve_client=curve)
        self.files.connect(f"tcp://127.0.0.1:{farm.file_port}")
        self.label = label
        self.slave_id = 0
        self.job: Optional[tuple[str, str]] = None
        self.last_beat = 0.0

    def request(self, name: str, payload: Optional[dict] = None) -> tuple[str, dict]:
        self.sock.send(name, payload)
        assert self.sock.zsocket.poll(5000), f"no answer to {name}"
        self.last_beat = time.monotonic()
        return self.sock.recv()

    def hello(self) -> None:
        name, ack = self.request("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": self.label, "python_tag": "cp311",
            "abi_tag": "cp311", "platform_tag": RAW_PLATFORM, "python_version": "3.11.7",
            "pip_version": "24.0", "image": "e" * 64, "os": "Linux", "build_timeout_s": 60.0, "building": None,
            "containment": CLAIMED_CONTAINMENT, "platforms": [RAW_PLATFORM]})
        assert name == "ACK", (name, ack)
        self.slave_id = ack["slave_id"]

    def wait_build(self, package: str, timeout_s: float = 30) -> None:
        """Ask for work until the master hands out *package*."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            name, payload = self.request("IDLE", {"stats": STATS})
            if name == "BUILD":
                assert payload["package"] == package, payload
                self.job = (payload["package"], payload["version"])
                return
            assert name == "SLEEP", (name, payload)
            time.sleep(0.3)
        raise AssertionError(f"the master never handed out {package}")

    def beat(self) -> None:
        """A BUSY heartbeat when one is due, as a real slave sends while it works."""
        if time.monotonic() - self.last_beat > 0.3:
            name, payload = self.request("BUSY", {"package": self.job[0],
                                                  "version": self.job[1], "stats": STATS})
            assert name == "CONT", (name, payload)

    def built(self, wheel: Path, claims: Optional[dict] = None) -> tuple[str, dict]:
        """BUILT with *wheel*'s facts (but for *claims*, a lie); the master's answer."""
        facts = {**inspect_wheel(wheel, find_apt_deps=False).to_dict(), **(claims or {})}
        name, payload = self.request("BUILT", {
            "package": self.job[0], "version": self.job[1], "success": True,
            "duration_s": 1.0, "log": "built by hand\n", "reason": None, "files": [facts]})
        if claims is None:
            assert (name, payload) == ("SEND", {"filename": wheel.name})
        return name, payload

    def send_file(self, wheel: Path, *, trickle_s: float = 0.0, before_first=None,
                  timeout_s: float = 30) -> tuple[bool, Optional[str]]:
        """OFFER *wheel* and serve the chunks asked for (the oldest one each *trickle_s*)."""
        size = wheel.stat().st_size
        data = wheel.read_bytes()
        self.files.send("OFFER", {"slave_id": self.slave_id, "filename": wheel.name,
                                  "size": size, "sha256": sha256_file(wheel)})
        fetches: list[tuple[int, int]] = []
        next_answer = time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.beat()
            if self.files.zsocket.poll(50):
                name, payload = self.files.recv()
                if name == "RECEIVED":
                    return payload["ok"], payload["reason"]
                if before_first is not None:
                    before_first()
                    before_first = None
                fetches.append((payload["offset"], payload["length"]))
            while fetches and time.monotonic() >= next_answer:
                offset, length = fetches.pop(0)
                chunk = data[offset:offset + length]
                self.files.send("CHUNK", {"filename": wheel.name, "offset": offset,
                                          "data": chunk, "crc32": zlib.crc32(chunk)})
                next_answer = time.monotonic() + trickle_s
        raise AssertionError("the master gave no verdict")

    def sent(self, wheel: Path) -> tuple[str, dict]:
        return self.request("SENT", {"filename": wheel.name})

    def close(self) -> None:
        self.sock.close()
        self.files.close()
