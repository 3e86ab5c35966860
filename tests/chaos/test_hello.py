"""Bad tags against a real piw-master: each is refused with its reason, nothing is stored.

A HELLO whose tags pass the protocol schema (they are strings of the right
length) but are no tags a builder can have once reached the build table's
CHECK constraints and stopped build_queue.  Here each is sent at a real
master's slave socket; the slave must be told DIE with the reason, the
master must keep serving, ``build_targets`` must hold no trace of it, and a
good slave must build afterwards.  piw-import's ``--abi`` and ``--platform``
are checked the same way.
"""

from __future__ import annotations

import subprocess
import time

import msgpack
import pytest
import sqlalchemy as sa
import zmq
from farm import BIN, CLAIMED_CONTAINMENT, builds_of, host_target, pyenv_python
from wheel_craft import craft_wheel

from piwheels import limits
from piwheels.protocols import PROTOCOL_VERSION

pytestmark = pytest.mark.slow

GOOD = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_x86_64"}
#: (tags changed from GOOD, what the reason must say)
BAD_HELLOS = [
    ({"abi_tag": "abi3"}, "not an ABI a builder runs"),
    ({"abi_tag": "none"}, "not an ABI a builder runs"),
    ({"abi_tag": "CP311"}, "lower-case"),
    ({"abi_tag": "cp311 "}, "letters, digits"),
    ({"abi_tag": ""}, "length 0"),  # the schema refuses these two
    ({"abi_tag": "c" * 150}, "length 150"),
    ({"abi_tag": "c" * limits.TAG}, "not a concrete ABI"),
    ({"abi_tag": "cp311.cp312"}, "letters, digits"),
    ({"platform_tag": "linux x86_64"}, "platform tag"),
    ({"platform_tag": "any"}, "platform tag 'any'"),
    ({"python_tag": "snake"}, "python tag"),
    ({"python_tag": "py2.py3"}, "python tag"),
    # not a tag, but refused the same way: a master on Linux requires contained builds
    ({"containment": "none: bwrap not found"}, "requires contained builds"),
]


def hello(sock: zmq.Socket, label: str, **tags: str) -> tuple[str, dict]:
    """Send HELLO as raw msgpack (so tags the schema refuses get through this end)."""
    sock.send(msgpack.packb(["HELLO", {
        "protocol": PROTOCOL_VERSION, "label": label, **GOOD,
        "python_version": "3.11.7", "pip_version": "24.0", "image": "e" * 64, "os": "Linux",
        "build_timeout_s": 60.0, "building": None, "containment": CLAIMED_CONTAINMENT,
        "platforms": ["linux_x86_64"],
        **tags}]))
    return answer(sock, label)


def answer(sock: zmq.Socket, label: str) -> tuple[str, dict]:
    assert sock.poll(5000), f"no answer to {label}"
    name, payload = msgpack.unpackb(sock.recv())
    return name, payload


def dealer(ctx: zmq.Context, farm) -> zmq.Socket:
    sock = farm.secure(ctx.socket(zmq.DEALER), "chaos")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{farm.slave_port}")
    return sock


def build_targets(master_dsn: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(tuple(row) for row in conn.execute(
                sa.text("SELECT abi_tag, platform_tag FROM build_targets")))
    finally:
        engine.dispose()


def test_bad_hellos_are_refused_and_a_good_slave_builds_afterwards(farm, db, release,
                                                                   master_dsn, tmp_path):
    release("after-chaos", kind="pure")
    farm.start_master()
    ctx = zmq.Context()
    try:
        for n, (tags, reason) in enumerate(BAD_HELLOS):
            sock = dealer(ctx, farm)
            try:
                said = hello(sock, f"bad-{n}", **tags)
            finally:
                sock.close()
            assert said[0] == "DIE" and reason in said[1]["reason"], (tags, said)
        # a slave that was welcome and says HELLO again with bad tags is dropped
        sock = dealer(ctx, farm)
        try:
            assert hello(sock, "turncoat")[0] == "ACK"
            name, payload = hello(sock, "turncoat", abi_tag="abi3")
            assert name == "DIE" and "abi3" in payload["reason"]
            sock.send(msgpack.packb(["IDLE", {"stats": {
                "load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}}]))
            assert answer(sock, "IDLE")[0] == "RESET"  # forgotten: it must say HELLO again
        finally:
            sock.close()
    finally:
        ctx.term()

    # an operator's import under a bad ABI is refused the same way, before any write
    wheel = craft_wheel(tmp_path)
    for option, value, words in [("--abi", "abi3", "'abi3'"), ("--abi", "CP311", "'CP311'"),
                                 ("--platform", "any", "platform tag 'any'"),
                                 ("--platform", "linux x86_64", "'linux x86_64'")]:
        tags = ["--abi", "cp311", "--platform", "linux_x86_64"]
        tags[tags.index(option) + 1] = value
        result = subprocess.run(
            [str(BIN / "piw-import"), "--control-address", farm.control_address, *tags,
             str(wheel)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert result.returncode == 1, result
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {option}: ") and words in line, line
    assert db.get_project("piw-craft") is None

    log = farm.master.log()
    assert farm.master.proc.poll() is None, log[-3000:]
    assert "Traceback" not in log and "task failed" not in log, log[-3000:]
    # logged once, however many came (the rest are counted on the next line, later)
    # (one line for the bad tags, one for the uncontained builds: each kind its own)
    assert log.count("refused slave") == 2, log[-3000:]
    # the turncoat's good HELLO only
    assert build_targets(master_dsn) == [("cp311", "linux_x86_64")]

    farm.start_slave("good", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "after-chaos"), 120, "the good slave's build")
    (build,) = builds_of(db, "after-chaos")
    assert (build.status, build.slave_label, (build.abi_tag, build.platform_tag)) == (
        "success", "good", host_target("cp311"))
    assert (farm.output / "simple" / "after-chaos" / build.files[0].filename).is_file()
    assert build_targets(master_dsn) == sorted({("cp311", "linux_x86_64"), host_target("cp311")})
    assert farm.master.proc.poll() is None
    time.sleep(0.5)
    assert "Traceback" not in farm.master.log()

