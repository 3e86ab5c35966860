"""No peer can block a release: a failure is retried once before it counts.

A real piw-master, one real piw-slave and fake slaves that speak the protocol
by hand (raw msgpack on a DEALER, as any process that reaches the port can).
One scenario, one master: a fake failure is retried and published by the real
slave; two builders' failures count; a lone builder's failure is retried by it
after the retry delay, and its second failure counts; piw-control failures
says who failed what; removing the builds makes the release anyone's again.
"""

from __future__ import annotations

import subprocess
import time

import msgpack
import pytest
import zmq
from farm import BIN, CLAIMED_CONTAINMENT, builds_of, pyenv_python, host_target

from piwheels.protocols import PROTOCOL_VERSION

pytestmark = pytest.mark.slow

#: the master's retry delay in this test (the default is hours)
RETRY_DELAY_S = 2.0
STATS = {"load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}


class FakeSlave:
    """A slave that fails whatever it is given."""

    def __init__(self, ctx: zmq.Context, farm, label: str) -> None:
        self.label = label
        self.sock = farm.secure(ctx.socket(zmq.DEALER), label)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{farm.slave_port}")
        assert self.say("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": label, "python_tag": "cp311",
            "abi_tag": "cp311", "platform_tag": "linux_x86_64", "python_version": "3.11.7",
            "pip_version": "24.0", "image": "e" * 64, "os": "Linux", "build_timeout_s": 60.0,
            "building": None, "containment": CLAIMED_CONTAINMENT,
            "platforms": ["linux_x86_64"]})[0] == "ACK"

    def say(self, name: str, payload: dict) -> tuple[str, dict]:
        self.sock.send(msgpack.packb([name, payload]))
        assert self.sock.poll(5000), f"no answer to {self.label}'s {name}"
        return tuple(msgpack.unpackb(self.sock.recv()))

    def idle(self) -> tuple[str, dict]:
        return self.say("IDLE", {"stats": STATS})

    def wait_for_build(self, timeout_s: float = 20) -> str:
        """IDLE until handed a build (the queue refreshes every second); its package."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            name, payload = self.idle()
            if name == "BUILD":
                return payload["package"]
            time.sleep(0.2)
        raise AssertionError(f"{self.label} was handed nothing")

    def fail(self, package: str) -> None:
        assert self.say("BUILT", {
            "package": package, "version": "1.0", "success": False, "duration_s": 0.5,
            "log": f"{self.label} says it broke\n", "reason": f"{self.label} says no",
            "files": []})[0] == "DONE"

    def close(self) -> None:
        self.sock.close()


def tool(farm, *args: str) -> str:
    """Run an admin tool against the farm's master; its output (it must succeed)."""
    result = subprocess.run(
        [str(BIN / args[0]), "--control-address", farm.control_address, *args[1:]],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def attempts(db, package: str) -> list[tuple[str, str]]:
    """(builder, result) of each attempt, the builder by its label: it is
    recorded by its key's id, which the farm's labels map to."""
    return [(LABELS.get(b.builder, b.builder), b.status) for b in builds_of(db, package)]


#: key id -> label of the builders in the test (filled as the farm makes their keys)
LABELS: dict[str, str] = {}


def test_a_failure_is_retried_once_on_another_builder_before_it_counts(farm, db, release):
    release("retry-me", kind="pure")
    farm.start_master("--retry-delay", str(RETRY_DELAY_S))
    LABELS.update({farm.key_id(label): label for label in ("fake-a", "fake-c", "real-b")})
    ctx = zmq.Context()
    try:
        # 1. a fake slave fails the release: re-queued, but not for it
        fake_a = FakeSlave(ctx, farm, "fake-a")
        assert fake_a.wait_for_build() == "retry-me"
        fake_a.fail("retry-me")
        assert fake_a.idle()[0] == "SLEEP"
        farm.wait(lambda: attempts(db, "retry-me") == [("fake-a", "failed")], 10,
                  "the failure recorded")
        assert db.pending_builds(host_target("cp311"), 10) == [("retry-me", "1.0")]
        # 2. a real slave builds it, and it is published
        real_b = farm.start_slave("real-b", pyenv_python("11"))
        farm.wait(lambda: ("real-b", "success") in attempts(db, "retry-me"), 120,
                  "the real slave's build")
        assert attempts(db, "retry-me") == [("fake-a", "failed"), ("real-b", "success")]
        (wheel,) = [f for b in builds_of(db, "retry-me") for f in b.files]
        assert (farm.output / "simple" / "retry-me" / wheel.filename).is_file()
        # the project page says who made each attempt
        page = farm.output / "project" / "retry-me" / "index.html"
        farm.wait(lambda: page.is_file() and farm.key_id("real-b") in page.read_text(), 20,
                  "the project page with both attempts")
        assert "fake-a says no" in page.read_text()
        real_b.stop()
        fake_a.close()

        # 3. two builders fail a release: it counts
        db.add_package("fails-twice")
        db.add_version("fails-twice", "1.0", has_sdist=True)
        fake_a, fake_c = FakeSlave(ctx, farm, "fake-a"), FakeSlave(ctx, farm, "fake-c")
        assert fake_a.wait_for_build() == "fails-twice"
        fake_a.fail("fails-twice")
        assert fake_a.idle()[0] == "SLEEP"
        assert fake_c.wait_for_build() == "fails-twice"
        fake_c.fail("fails-twice")
        farm.wait(lambda: len(attempts(db, "fails-twice")) == 2, 10, "both failures recorded")
        assert db.get_versions("fails-twice")["1.0"]["built"]
        assert db.pending_builds(host_target("cp311"), 10) == []

        # 4. a lone builder's failure: retried by it after the delay, then it counts
        db.add_package("fails-alone")
        db.add_version("fails-alone", "1.0", has_sdist=True)
        fake_c.close()
        assert fake_a.wait_for_build() == "fails-alone"
        fake_a.fail("fails-alone")
        failed_at = time.monotonic()
        while (answer := fake_a.idle())[0] == "SLEEP":
            assert time.monotonic() - failed_at < RETRY_DELAY_S + 10, "never retried"
            time.sleep(0.3)
        assert answer == ("BUILD", {"package": "fails-alone", "version": "1.0"})
        assert time.monotonic() - failed_at >= RETRY_DELAY_S - 0.5
        fake_a.fail("fails-alone")
        farm.wait(lambda: len(attempts(db, "fails-alone")) == 2, 10, "the retry recorded")
        assert attempts(db, "fails-alone") == [("fake-a", "failed")] * 2
        assert db.pending_builds(host_target("cp311"), 10) == []
        time.sleep(1.2)  # a queue refresh (every second): still nothing for anyone
        assert fake_a.idle()[0] == "SLEEP"

        # 5. the operator's view: who failed what, and whether it counts yet
        lines = tool(farm, "piw-control", "failures").splitlines()
        assert lines[0].split()[:3] == ["started", "(UTC)", "project"], lines
        fake_a_key = farm.key_id("fake-a")
        # the target column names the ABI and the platform: "cp311 linux_x86_64"
        assert any(line.split()[2:9] == ["fails-alone", "1.0", *host_target("cp311"),
                                         fake_a_key, "failed", "counts"]
                   for line in lines), lines
        assert any(line.split()[2:9] == ["retry-me", "1.0", *host_target("cp311"),
                                         fake_a_key, "failed", "built"]
                   for line in lines), lines
        (only,) = tool(farm, "piw-control", "failures", "1", "--project", "retry-me"
                       ).splitlines()[1:]
        assert "fake-a says no" in only

        # 6. the operator's word still forces a build: anyone may have it at once
        tool(farm, "piw-remove", "-y", "fails-alone", "1.0", "--builds")
        fake_a.close()  # silent while the tools ran: the master may have dropped it
        fake_a = FakeSlave(ctx, farm, "fake-a")
        assert fake_a.wait_for_build(5) == "fails-alone"
        fake_a.close()
    finally:
        ctx.destroy(linger=0)

    # a count out of range never reaches the master: one line, exit status 1 (a value
    # of the right kind that breaks a rule)
    result = subprocess.run(
        [str(BIN / "piw-control"), "--control-address", farm.control_address, "failures", "0"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and "1 to 1000" in result.stderr.splitlines()[-1], result
    log = farm.master.log()
    assert "Traceback" not in log, log[-3000:]
