"""slave_driver alone: its queue pages and its hand-over to a build recorder that lags.

The task runs in its thread on real sockets: slaves are DEALERs on TCP, and
the test plays build_queue and build_recorder on the inproc sockets.
"""

from __future__ import annotations

import logging
import time

import zmq
from farm import free_port, recv, task_failure

from piwheels.master.job_queue import JobQueue
from piwheels.master.slave_driver import SlaveDriver
from piwheels.protocols import (
    BUILD_QUEUE, PROTOCOL_VERSION, QUEUE_REQUESTS, RECORD_REQUESTS, SLAVE, SUPERVISOR,
)
from piwheels.transport import Socket

ABI = "cp311"
OTHER_ABI = "cp312"
#: the platform the rig's slaves run on, and another (the same ABI there is another target)
PLAT = "linux_x86_64"
OTHER_PLAT = "linux_aarch64"


def at(abi: str = ABI, platform: str = PLAT) -> dict:
    """A message's target fields."""
    return {"abi_tag": abi, "platform_tag": platform}


def known(*targets: tuple[str, str], os_release: str | None = None) -> dict:
    """TARGETS' payload: these targets, active, pinned to *os_release* (None: any)."""
    return {"targets": [{**at(*t), "os_release": os_release, "active": True} for t in targets]}
#: the rig's heartbeat: a slave with nothing to build is parked this long, then
#: told to SLEEP 0 s (a long liveness keeps slaves that a test leaves alone)
PARK_S = 0.4
STATS = {"load_1m": None, "memory_free": None, "disk_free": None, "temperature_c": None}


def build_of(name: str) -> dict:
    """A BUILD's payload."""
    return {"package": name, "version": "1.0"}


def jobs(*names: str, failed_by: str | None = "elsewhere",
         failed_at: float | None = None) -> list[dict]:
    """A page of the queue.  By default each release failed once on another
    builder already, so a test slave's failure is the retry that settles it
    (and the driver holds it back from the queue, as the paging tests want);
    ``failed_by=None``: never tried."""
    if failed_by is not None and failed_at is None:
        failed_at = time.time()
    return [{"package": name, "version": "1.0", "failed_by": failed_by,
             "failed_at": failed_at if failed_by is not None else None, "failed_images": [],
             "requires_python": None, "upstream_wheels": []} for name in names]


class Rig:
    """A running SlaveDriver, the sockets of the tasks around it, and slaves."""

    def __init__(self, **options) -> None:
        self.ctx = zmq.Context()
        self.supervisor = self.bound(zmq.PULL, SUPERVISOR.reverse(), SUPERVISOR.address)
        self.queue_requests = self.bound(zmq.PULL, QUEUE_REQUESTS.reverse(),
                                         QUEUE_REQUESTS.address)
        # a recorder that takes only what the test reads, and holds one more
        self.records = self.bound(zmq.PULL, RECORD_REQUESTS.reverse(),
                                  RECORD_REQUESTS.address, hwm=1)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        options.setdefault("containment_required", False)
        self.task = SlaveDriver(self.ctx, slave_bind=self.address, index_url="http://x/simple/",
                                **{"retry_delay_s": 3600.0, "heartbeat_s": PARK_S,
                                   "liveness": 40, "sleep_s": 0.05, **options})
        self.queue = Socket.make(self.ctx, zmq.PUSH, BUILD_QUEUE)
        self.queue.connect(BUILD_QUEUE.address)
        # as build_queue does first: the targets the farm knows (keyless slaves build
        # only these)
        self.queue.send("TARGETS", known((ABI, PLAT), (OTHER_ABI, PLAT), (ABI, OTHER_PLAT)))
        self.slaves: list[Socket] = []
        self.task.start()

    def bound(self, kind: int, protocol, address: str, **options) -> Socket:
        sock = Socket.make(self.ctx, kind, protocol, **options)
        sock.bind(address)
        return sock

    def slave(self, abi: str = ABI, image: str = "e" * 64, platform: str = PLAT) -> Socket:
        sock = Socket.make(self.ctx, zmq.DEALER, SLAVE)
        sock.connect(self.address)
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": f"test-{len(self.slaves)}",
            "python_tag": abi, "abi_tag": abi, "platform_tag": platform,
            "python_version": "3.11.2", "pip_version": "23.0", "image": image, "os": "test",
            "build_timeout_s": 60, "building": None, "containment": "none: test",
            "platforms": [platform],
        })
        assert recv(sock)[0] == "ACK"
        self.slaves.append(sock)
        return sock

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.task._quit = True
        self.task.join(10)
        assert not self.task.is_alive()
        failed = task_failure(self.supervisor)
        self.ctx.destroy(linger=0)
        assert not failed, f"the task reported a failure: {failed}"


def next_job(slave: Socket) -> tuple[str, dict]:
    """IDLE, and what the master answers."""
    slave.send("IDLE", {"stats": STATS})
    return recv(slave)


def fail(slave: Socket, job: dict, log: str = "log\n", reason: str = "test") -> None:
    slave.send("BUILT", {**job, "success": False, "duration_s": 0.1, "log": log,
                         "reason": reason, "files": []})
    assert recv(slave)[0] == "DONE"


def requests(rig: Rig, timeout_s: float = 2) -> list[tuple[str, dict]]:
    """What build_queue was asked, until nothing more comes for *timeout_s*."""
    heard = []
    while rig.queue_requests.zsocket.poll(int(timeout_s * 1000)):
        heard.append(rig.queue_requests.recv())
        timeout_s = 0.2
    return heard


def test_job_queue_keeps_each_job_once():
    queue = JobQueue()
    queue.extend([("a", "1"), ("b", "1"), ("a", "1")])
    queue.extend([("b", "1"), ("c", "1")])
    assert list(queue) == [("a", "1"), ("b", "1"), ("c", "1")]
    assert queue.pop() == ("a", "1")
    queue.extend([("a", "1")])  # taken off, so it may come back
    assert list(queue) == [("b", "1"), ("c", "1"), ("a", "1")]
    queue.replace([("d", "1"), ("c", "1")], keep_rest=True)
    assert list(queue) == [("d", "1"), ("c", "1"), ("b", "1"), ("a", "1")]
    queue.replace([("e", "1")])
    assert list(queue) == [("e", "1")]
    queue.extend([("f", "1"), ("f", "2")])
    queue.remove_if(lambda job: job[0] == "f")
    assert list(queue) == [("e", "1")] and queue.pop() == ("e", "1") and queue.pop() is None


def test_asks_for_the_next_page_and_extends_without_repeats():
    with Rig() as r:
        slave = r.slave()
        # a slave without a key builds for the ABIs the farm knows, and adds none
        assert ("TARGET", at()) not in requests(r)
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("a", "b", "c")})
        name, job = next_job(slave)
        assert (name, job) == ("BUILD", build_of("a"))
        # a whole page is kept in hand: the first hand-out already asks for more
        assert requests(r) == [("MORE", at(ABI))]
        # the page overlaps what the driver holds (the database lags): no repeats
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs("c", "d", "a")})
        fail(slave, job)
        order = []
        for _ in range(3):
            name, job = next_job(slave)
            assert name == "BUILD"
            order.append(job["package"])
            fail(slave, job)
        assert order == ["b", "c", "d"]
        assert next_job(slave)[0] == "SLEEP"
        # a recalculation replaces what the driver held, less what was handed out
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs("x", "y")})
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("a", "e", "y")})
        name, job = next_job(slave)
        assert (name, job) == ("BUILD", build_of("e"))
        fail(slave, job)
        assert next_job(slave) == ("BUILD", build_of("y"))
        fail(slave, build_of("y"))
        assert next_job(slave)[0] == "SLEEP"  # x is gone
        # when most of it was handed out (the database trails the driver), what
        # the driver held stays behind the fresh part
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs("x", "w")})
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("a", "b", "e", "z")})
        order = []
        while (reply := next_job(slave))[0] == "BUILD":
            order.append(reply[1]["package"])
            fail(slave, reply[1])
        assert order == ["z", "x", "w"]


def build_until_held(slave: Socket, names: list[str]) -> list[str]:
    """Fail builds as handed out until the driver says SLEEP; the packages built."""
    built = []
    while (reply := next_job(slave))[0] == "BUILD":
        built.append(reply[1]["package"])
        fail(slave, reply[1])
        assert len(built) < len(names), "the driver never waited for the recorder"
    return built


def test_recorder_behind_holds_builds_and_loses_nothing():
    with Rig(record_backlog=1) as r:
        slave = r.slave()
        names = [f"p{n}" for n in range(8)]
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs(*names)})
        built = build_until_held(slave, names)
        assert built == names[:len(built)]
        # the recorder catches up: every attempt arrives, in order, once
        recorded = []
        while len(recorded) < len(built) and r.records.zsocket.poll(2000):
            recorded.append(r.records.recv()[1]["package"])
        assert recorded == built
        # and builds flow again, from where they stopped
        assert next_job(slave) == ("BUILD", build_of(names[len(built)]))


def test_stopping_driver_hands_over_what_the_recorder_had_not_taken():
    with Rig(record_backlog=1) as r:
        slave = r.slave()
        names = ["a", "b", "c", "d", "e"]
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs(*names)})
        built = build_until_held(slave, names)
        # the driver stops while the recorder is behind; the recorder reads on
        # (in the master it stops after the driver)
        r.task._quit = True
        recorded = []
        while len(recorded) < len(built) and r.records.zsocket.poll(3000):
            recorded.append(r.records.recv()[1]["package"])
        r.task.join(10)
        assert recorded == built


def test_policy_change_replaces_everything_held():
    """After a policy change (REPLACE) nothing the driver held stays, even when the
    head of the fresh queue was handed out already (a QUEUE would keep the rest)."""
    with Rig() as r:
        slave = r.slave()
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("a", "b", "c", "d", "e")})
        for name in ("a", "b", "c"):
            reply = next_job(slave)
            assert reply == ("BUILD", build_of(name))
            fail(slave, reply[1])
        # the policy now leaves d and e out; a, b, c were just built
        r.queue.send("REPLACE", {**at(ABI), "builds": jobs("a", "b", "c", "f")})
        assert next_job(slave) == ("BUILD", build_of("f"))
        fail(slave, build_of("f"))
        assert next_job(slave)[0] == "SLEEP"


def wheel_facts(filename: str) -> dict:
    name, version, rest = filename[:-len(".whl")].split("-", 2)
    py_tag, abi_tag, platform_tag = rest.split("-")
    return {"filename": filename, "size": 10, "sha256": "0" * 64, "package_tag": name,
            "version_tag": version, "py_tag": py_tag, "abi_tag": abi_tag,
            "platform_tag": platform_tag, "requires_python": None, "requires_dist": [],
            "metadata": b"", "metadata_sha256": "0" * 64, "apt_dependencies": []}


def built(slave: Socket, job: dict, files: list[dict]) -> None:
    slave.send("BUILT", {**job, "success": True, "duration_s": 0.1, "log": "log\n",
                         "reason": None, "files": files})
    assert recv(slave)[0] == "DONE"


def test_results_refused_at_built_are_logged_once_with_slave_build_and_reason(caplog):
    """The master's log says which slave's result for which build was refused and
    why; a slave repeating it does not flood the log, and every one is recorded."""
    caplog.set_level(logging.INFO, logger="piwheels.master.slave_driver")
    with Rig() as r:
        slave = r.slave()
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("a", "b", "c")})
        name, job = next_job(slave)
        assert (name, job) == ("BUILD", build_of("a"))
        built(slave, job, [wheel_facts("other-1.0-cp311-cp311-linux_x86_64.whl")])
        _, job = next_job(slave)
        built(slave, job, [])
        _, job = next_job(slave)
        built(slave, job, [wheel_facts("c-1.0-cp311-cp311-linux_x86_64.whl")] * 2)
        records = [r.records.recv()[1] for _ in range(3)]
    assert [(rec["package"], rec["status"]) for rec in records] == [
        ("a", "rejected"), ("b", "rejected"), ("c", "rejected")]
    assert "not a wheel of a" in records[0]["reason"]
    lines = [rec.getMessage() for rec in caplog.records if "rejected" in rec.getMessage()]
    assert lines == ["rejected a 1.0 from slave 1 (test-0): other-1.0-cp311-cp311-"
                     "linux_x86_64.whl is not a wheel of a"], lines


def test_a_slave_without_a_key_builds_only_for_abis_the_farm_knows():
    with Rig() as r:
        sock = Socket.make(r.ctx, zmq.DEALER, SLAVE)
        sock.connect(r.address)
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": "newcomer", "python_tag": "cp313",
            "abi_tag": "cp313", "platform_tag": "linux_x86_64", "python_version": "3.13.1",
            "pip_version": "24.0", "image": "e" * 64, "os": "test", "build_timeout_s": 60, "building": None,
            "containment": "none: test", "platforms": ["linux_x86_64"]})
        name, die = recv(sock)
        assert name == "DIE"
        assert "does not build for cp313 linux_x86_64" in die["reason"]
        assert "enrolled" in die["reason"]
        assert "piw-control add-target cp313 linux_x86_64" in die["reason"]
        assert requests(r, 0.5) == []  # no target registered
        assert r.task.slaves == {}
        r.slave()  # a slave of a known ABI is welcome


def test_a_failure_goes_to_another_builder_first_and_back_only_after_the_delay():
    """One failure is a claim: the release goes to another builder of the ABI at
    once, to the one that failed it only after the retry delay; the retry settles
    it.  What the queue says (the database's record of a failure, after a master
    restart, say) keeps the builder off it the same way, and a builder that is
    kept off all the driver holds makes it ask for the next page."""
    with Rig(retry_delay_s=1.0) as r:
        a, b = r.slave(), r.slave()
        requests(r)  # (what their HELLOs asked of the queue)
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("r1", "r2", failed_by=None)})
        time.sleep(0.1)  # the page is in before the slaves ask
        recorded = []

        def fail_recorded(slave, name):
            fail(slave, build_of(name))  # and the recorder takes it (it holds one)
            recorded.append(recv(r.records)[1])

        assert next_job(a) == ("BUILD", build_of("r1"))
        assert requests(r, 0.5) == [("MORE", at(ABI))]  # a page in hand
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs("r3", failed_by=None)})
        time.sleep(0.1)
        for name, after in (("r1", "r2"), ("r2", "r3")):
            fail_recorded(a, name)
            assert next_job(a) == ("BUILD", build_of(after))  # not the one it failed
        fail_recorded(a, "r3")
        assert next_job(a)[0] == "SLEEP"  # all three wait for another builder...
        assert requests(r, 0.5) == [("MORE", at(ABI))]  # ...and a wants more
        assert next_job(b) == ("BUILD", build_of("r3"))  # the latest failure first
        fail_recorded(b, "r3")  # the retry: settled, held back from everyone
        assert next_job(b) == ("BUILD", build_of("r2"))
        assert [(rec["package"], rec["builder"], rec["status"]) for rec in recorded] == [
            ("r1", "test-0", "failed"), ("r2", "test-0", "failed"), ("r3", "test-0", "failed"),
            ("r3", "test-1", "failed")]
        # the database says test-0 failed r4 a moment ago
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs(
            "r4", failed_by="test-0", failed_at=time.time())})
        time.sleep(0.1)
        assert next_job(a)[0] == "SLEEP"
        time.sleep(1.1)
        # alone on them (b is busy): after the delay, its own failures come back
        assert next_job(a) == ("BUILD", build_of("r1"))
        fail_recorded(a, "r1")
        assert next_job(a) == ("BUILD", build_of("r4"))
        fail_recorded(a, "r4")
        assert next_job(a)[0] == "SLEEP"  # r1, r3, r4 settled; r2 with b


def test_a_release_the_slave_need_not_build_is_skipped_at_once():
    """Requires-Python against the slave's own Python (3.11.2), upstream's wheels
    against its platforms: the slave is handed the next build in the same answer,
    and the recorder is told why each was skipped."""
    with Rig() as r:
        slave = r.slave()
        page = jobs("needs-312", "pure-upstream", "arm-upstream", "patch", "plain",
                    failed_by=None)
        page[0]["requires_python"] = ">=3.12"
        page[1]["upstream_wheels"] = ["pure_upstream-1.0-py3-none-any.whl"]
        page[2]["upstream_wheels"] = ["arm_upstream-1.0-cp311-cp311-linux_aarch64.whl"]
        page[3]["requires_python"] = ">=3.11.1"  # 3.11.2 is in: built
        r.queue.send("QUEUE", {**at(ABI), "builds": page})
        time.sleep(0.1)
        assert next_job(slave) == ("BUILD", build_of("arm-upstream"))
        skips = [recv(r.records) for _ in range(2)]
        assert [(name, s["package"], s["cause"]) for name, s in skips] == [
            ("SKIP", "needs-312", "requires-python"), ("SKIP", "pure-upstream", "upstream-wheel")]
        assert skips[0][1]["detail"] == "Requires-Python >=3.12 excludes Python 3.11.2"
        assert skips[1][1]["detail"] == "upstream serves pure_upstream-1.0-py3-none-any.whl"
        assert skips[0][1]["abi_tag"] == ABI
        fail(slave, build_of("arm-upstream"))
        assert recv(r.records)[0] == "RECORD"
        assert next_job(slave) == ("BUILD", build_of("patch"))


def parked(slave: Socket, wait_s: float = 0.1) -> bool:
    """IDLE, and no answer for *wait_s*: the driver keeps the slave parked."""
    slave.send("IDLE", {"stats": STATS})
    return not slave.zsocket.poll(int(wait_s * 1000))


def test_parked_slaves_get_jobs_the_moment_they_come_longest_parked_first():
    with Rig(sleep_s=60.0) as r:
        a, b = r.slave(), r.slave()
        assert parked(a) and parked(b, 0.05)
        # not told to sleep out --sleep-interval: BUILD as soon as a page comes, to
        # the slave parked first
        sent = time.monotonic()
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("p1", failed_by=None)})
        assert recv(a) == ("BUILD", build_of("p1"))
        assert time.monotonic() - sent < 0.05
        assert not b.zsocket.poll(50)
        r.queue.send("EXTEND", {**at(ABI), "builds": jobs("p2", failed_by=None)})
        assert recv(b) == ("BUILD", build_of("p2"))
        # a failure is offered to another builder at once: to a parked one
        fail(a, build_of("p1"))
        assert parked(a)  # (it failed p1)
        fail(b, build_of("p2"))
        assert recv(a) == ("BUILD", build_of("p2"))
        assert next_job(b) == ("BUILD", build_of("p1"))
        fail(b, build_of("p1"))  # the retry: settled
        # nothing more: within a heartbeat the driver says ask again at once
        parked_at = time.monotonic()
        assert parked(b, 0.0)
        name, payload = recv(b)
        assert (name, payload) == ("SLEEP", {"seconds": 0})
        assert PARK_S * 0.9 <= time.monotonic() - parked_at <= PARK_S * 2
        assert r.task.slaves and len(r.task.slaves) == 2  # and nobody was dropped


def test_parked_slave_is_not_dropped_and_an_operator_stop_reaches_it_at_once():
    with Rig(liveness=1) as r:
        slave = r.slave()
        for _ in range(3):  # a liveness of one heartbeat, parked one heartbeat each time
            assert next_job(slave) == ("SLEEP", {"seconds": 0})
        assert len(r.task.slaves) == 1
        assert parked(slave)
        r.task.slave_action("stop", None)  # (what piw-control stop does, in its thread)
        assert recv(slave, PARK_S / 2) == ("DIE", {"reason": "stopped by the operator"})


def test_a_job_another_abi_was_building_is_offered_again_when_that_build_ends():
    """A page names a release a slave of another ABI is building: it is left out,
    and offered again as soon as that build fails or the slave is lost, not at
    the next recalculation."""
    with Rig() as r:
        old, new = r.slave(ABI), r.slave(OTHER_ABI)
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("x", "w", failed_by=None)})
        assert next_job(old) == ("BUILD", build_of("x"))
        r.queue.send("QUEUE", {**at(OTHER_ABI), "builds": jobs("x", "y", failed_by=None)})
        assert next_job(new) == ("BUILD", build_of("y"))  # x is being built for cp311
        fail(new, build_of("y"))
        assert parked(new)
        ended = time.monotonic()
        fail(old, build_of("x"))
        assert recv(new) == ("BUILD", build_of("x"))
        assert time.monotonic() - ended < 0.1
        # the slave building a held-back job is lost: the job is offered at once
        assert next_job(old) == ("BUILD", build_of("w"))  # (it failed x)
        r.queue.send("EXTEND", {**at(OTHER_ABI), "builds": jobs("w", failed_by=None)})
        fail(new, build_of("x"))
        assert parked(new)  # (it failed y and x; w is being built)
        old.send("BYE", {"reason": "test"})
        assert recv(new) == ("BUILD", build_of("w"))
#: a real compiler's words for a missing header (a deterministic cause)
MISSING_HEADER_LOG = ("ldap.c:1:10: fatal error: lber.h: No such file or directory\n"
                      "compilation terminated.\n")


def test_a_deterministic_failure_is_never_offered_to_its_image_again():
    """A missing header on image A: not to any builder of A (not after the retry
    delay either), at once to one of image B; the queue's pages say the same of
    what the database knows.  A failure for no deterministic cause keeps the
    rule of the count of two: another builder of the same image has it at once."""
    image_a, image_b = "a" * 64, "b" * 64
    with Rig(retry_delay_s=0.2) as r:
        a1, a2, b = r.slave(image=image_a), r.slave(image=image_a), r.slave(image=image_b)
        heard = requests(r)
        assert ("IMAGE", {**at(), "image": image_b, "os": "test"}) in heard
        r.queue.send("QUEUE", {**at(ABI), "builds": jobs("r1", "r2", failed_by=None)})
        time.sleep(0.1)
        assert next_job(a1) == ("BUILD", build_of("r1"))
        fail(a1, build_of("r1"), log=MISSING_HEADER_LOG, reason="pip wheel failed")
        record = recv(r.records)[1]
        assert (record["package"], record["image"]) == ("r1", image_a)
        time.sleep(0.3)  # the retry delay is over: it does not matter here
        assert next_job(a2) == ("BUILD", build_of("r2"))
        fail(a2, build_of("r2"), reason="timed out after 60 s")
        record = recv(r.records)[1]
        assert (record["package"], record["image"]) == ("r2", image_a)
        assert next_job(a1) == ("BUILD", build_of("r2"))  # another builder, same image
        assert next_job(b) == ("BUILD", build_of("r1"))  # another image
        # after a restart, the database's word: r3 failed on A for a deterministic cause
        r.queue.send("EXTEND", {**at(ABI), "builds": [
            {**jobs("r3", failed_by=None)[0], "failed_images": [image_a]}]})
        time.sleep(0.1)
        assert next_job(a2)[0] == "SLEEP"


def test_two_slaves_of_one_abi_on_two_platforms_each_get_only_their_targets_jobs():
    """cp311 on x86_64 and cp311 on aarch64 are two targets: each slave is handed
    its own target's queue and never the other's, asks for more of its own, and
    a release both need waits while the other target's slave builds it."""
    with Rig() as r:
        x86, arm = r.slave(platform=PLAT), r.slave(platform=OTHER_PLAT)
        requests(r, 0.3)  # (what their HELLOs asked of the queue)
        r.queue.send("QUEUE", {**at(ABI, PLAT), "builds": jobs("x1", "both", "x2",
                                                              failed_by=None)})
        r.queue.send("QUEUE", {**at(ABI, OTHER_PLAT), "builds": jobs("both", "a1",
                                                                    failed_by=None)})
        time.sleep(0.1)
        assert next_job(x86) == ("BUILD", build_of("x1"))
        assert next_job(arm) == ("BUILD", build_of("both"))
        # MORE of each target, asked by its own slave
        asked = requests(r, 0.5)
        assert sorted(asked, key=lambda m: m[1]["platform_tag"]) == [
            ("MORE", at(ABI, OTHER_PLAT)), ("MORE", at(ABI, PLAT))]
        fail(x86, build_of("x1"))
        # "both" is being built for aarch64: x86_64 gets its next own job meanwhile
        assert next_job(x86) == ("BUILD", build_of("x2"))
        fail(arm, build_of("both"))  # its build ended: x86_64 may have it now
        assert next_job(arm) == ("BUILD", build_of("a1"))
        fail(x86, build_of("x2"))
        assert next_job(x86) == ("BUILD", build_of("both"))
        fail(x86, build_of("both"))
        fail(arm, build_of("a1"))
        # the failures were first ones (offered to other builders of the target):
        # neither slave is ever handed the other's jobs
        assert parked(x86) and parked(arm, 0.05)
        records = [recv(r.records)[1] for _ in range(5)]
    by_target = {(rec["package"], rec["platform_tag"]) for rec in records}
    assert by_target == {("x1", PLAT), ("x2", PLAT), ("both", PLAT), ("both", OTHER_PLAT),
                         ("a1", OTHER_PLAT)}
    assert {rec["os_release"] for rec in records} == {"test"}


def test_a_target_pinned_to_an_os_release_refuses_slaves_of_another():
    with Rig() as r:
        r.queue.send("TARGETS", known((ABI, PLAT), os_release="Debian 12"))
        time.sleep(0.1)
        sock = Socket.make(r.ctx, zmq.DEALER, SLAVE)
        sock.connect(r.address)
        sock.send("HELLO", {
            "protocol": PROTOCOL_VERSION, "label": "old-os", "python_tag": ABI, "abi_tag": ABI,
            "platform_tag": PLAT, "python_version": "3.11.2", "pip_version": "23.0",
            "image": "e" * 64, "os": "Debian 11", "build_timeout_s": 60, "building": None,
            "containment": "none: test", "platforms": [PLAT]})
        name, die = recv(sock)
        assert name == "DIE"
        assert die["reason"].startswith(
            "the farm builds cp311 linux_x86_64 on Debian 12 only, and this slave runs "
            "Debian 11"), die["reason"]
        assert r.task.slaves == {}
        # unpinned again: welcome
        r.queue.send("TARGETS", known((ABI, PLAT)))
        time.sleep(0.1)
        r.slave()
