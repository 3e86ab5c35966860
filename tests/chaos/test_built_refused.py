"""A result the master refuses at BUILT, sent to a real piw-master: logged, rate-limited, survived.

A slave can report a build whose wheels cannot be accepted (here, a real
wheel of another project); the master refuses it before any transfer,
records the attempt as rejected and says so in its log: one line naming
the slave, the build and the reason.  A slave repeating such results must
not flood the log.  The fake slave speaks the real slave protocol through
the real transport (every message schema-checked on both ends); afterwards
a real slave's build must complete and the output agree with the database.
"""

from __future__ import annotations

import re
import time

import pytest
import zmq
from consistency import wait_consistent
from farm import CLAIMED_CONTAINMENT, builds_of, pyenv_python, recv
from wheel_craft import craft_wheel

from piwheels.protocols import PROTOCOL_VERSION, SLAVE
from piwheels.transport import Socket
from piwheels.wheel_facts import inspect_wheel

pytestmark = pytest.mark.slow

NO_STATS = {"load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}
REFUSED = ("refused-a", "refused-b", "refused-c")


def next_build(sock: Socket) -> dict:
    """IDLE until the master hands out a build (it sleeps the slave while its queue fills)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sock.send("IDLE", {"stats": NO_STATS})
        name, payload = recv(sock)
        if name == "BUILD":
            return payload
        assert name == "SLEEP", (name, payload)
        time.sleep(payload["seconds"])
    raise AssertionError("the master handed out no build")


def test_results_refused_at_built_are_logged_once_and_the_master_keeps_serving(
        farm, db, release, master_dsn, tmp_path):
    for name in (*REFUSED, "built-after"):  # the first three, newest, go to the liar
        release(name, kind="pure")
    facts = inspect_wheel(craft_wheel(tmp_path), find_apt_deps=False).to_dict()
    farm.start_master()
    ctx = zmq.Context()
    sock = Socket.make(ctx, zmq.DEALER, SLAVE, curve_client=farm.curve_client("liar"))
    try:
        sock.connect(f"tcp://127.0.0.1:{farm.slave_port}")
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": "liar", "python_tag": "cp311",
            "abi_tag": "cp311", "platform_tag": "linux_x86_64", "python_version": "3.11.7",
            "pip_version": "24.0", "image": "e" * 64, "os": "Linux", "build_timeout_s": 60.0, "building": None,
            "containment": CLAIMED_CONTAINMENT, "platforms": ["linux_x86_64"]})
        name, ack = recv(sock)
        assert name == "ACK"
        handed = []
        for _ in REFUSED:  # a burst: three refusals within seconds
            job = next_build(sock)
            handed.append(job["package"])
            sock.send("BUILT", {**job, "success": True, "duration_s": 1.0, "log": "built\n",
                                "reason": None, "files": [facts]})
            assert recv(sock)[0] == "DONE"  # refused, and the slave is free again
        sock.send("BYE", {"reason": "done lying"})
    finally:
        sock.close()
        ctx.term()
    assert sorted(handed) == list(REFUSED)

    # every attempt recorded, as rejected, with its reason
    reasons = {}
    for package in REFUSED:
        (build,) = farm.wait(lambda p=package: builds_of(db, p), 20, f"{package}'s attempt")
        assert (build.status, build.slave_label, build.files) == ("rejected", "liar", ())
        reasons[package] = build.reason
        assert build.reason == f"{facts['filename']} is not a wheel of {package}"
    # one log line for the burst, naming the slave, the build and the reason
    log = farm.master.log()
    lines = [line for line in log.splitlines() if re.search(r"\brejected refused-", line)]
    first = handed[0]
    assert len(lines) == 1, lines
    assert lines[0].endswith(f"rejected {first} 1.0 from slave {ack['slave_id']} (liar): "
                             f"{reasons[first]}"), lines[0]

    # the master keeps serving: a real slave builds what is left
    farm.start_slave("honest", pyenv_python("11"))
    (build,) = farm.wait(lambda: builds_of(db, "built-after"), 120, "the honest slave's build")
    assert (build.status, build.slave_label) == ("success", "honest")
    assert (farm.output / "simple" / "built-after" / build.files[0].filename).is_file()
    # and, as a rejection counts only once retried on another builder, what the
    # liar's results were refused for too
    for package in REFUSED:
        farm.wait(lambda p=package: len(builds_of(db, p)) == 2, 120, f"{package} built again")
        assert [(b.status, b.slave_label) for b in builds_of(db, package)] == [
            ("rejected", "liar"), ("success", "honest")]
    wait_consistent(farm.output, master_dsn)
    assert farm.master.proc.poll() is None
    log = farm.master.log()
    assert "Traceback" not in log and "task failed" not in log, log[-3000:]
