"""build_queue alone: a build target it is asked to register is checked before its table.

The task runs in its thread on real inproc sockets and a real database; the
test plays the slave driver.  The driver refuses slaves with bad tags, so this
is the second line: a bad target (ABI or platform) that reaches build_queue is
logged and dropped, and the task goes on serving the good ones.
"""

from __future__ import annotations

import time

import zmq
from farm import HOST_PLATFORM, host_target, recv, task_failure

from piwheels.master.build_queue import BuildQueue
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, QUEUE_REQUESTS, SUPERVISOR
from piwheels.tags import Target
from piwheels.transport import Socket


def test_bad_targets_are_dropped_and_good_ones_served(db, master_dsn, caplog):
    ctx = zmq.Context()
    supervisor = Socket.make(ctx, zmq.PULL, SUPERVISOR.reverse())
    supervisor.bind(SUPERVISOR.address)
    queue = Socket.make(ctx, zmq.PULL, BUILD_QUEUE.reverse())
    queue.bind(BUILD_QUEUE.address)
    index = Socket.make(ctx, zmq.PULL, INDEX_REQUESTS.reverse())
    index.bind(INDEX_REQUESTS.address)
    task = BuildQueue(ctx, dsn=master_dsn, queue_size=10, interval_s=60)
    task.start()
    try:
        requests = Socket.make(ctx, zmq.PUSH, QUEUE_REQUESTS)
        requests.connect(QUEUE_REQUESTS.address)
        bad_targets = [(bad, HOST_PLATFORM) for bad in ("abi3", "none", "CP311", "cp311 ")]
        # a wheel's platform, not one a builder runs on, and tags that are no tags
        bad_targets += [("cp311", bad) for bad in ("any", "Linux_x86_64", "linux x86_64")]
        for abi_tag, platform_tag in bad_targets:
            requests.send("TARGET", {"abi_tag": abi_tag, "platform_tag": platform_tag})
        abi_tag, platform_tag = host_target("cp311")
        requests.send("TARGET", {"abi_tag": abi_tag, "platform_tag": platform_tag})
        # the good target's queue comes, so the task lived through the bad ones
        deadline = time.monotonic() + 10
        told = []  # the targets the driver is told the farm knows, each time they change
        while time.monotonic() < deadline:
            name, page = recv(queue)
            if name == "TARGETS":
                told.append(page["targets"])
            elif (page["abi_tag"], page["platform_tag"]) == host_target("cp311"):
                break
        assert (name, page["abi_tag"], page["platform_tag"]) == ("QUEUE", *host_target("cp311"))
        good = {"abi_tag": "cp311", "platform_tag": HOST_PLATFORM, "os_release": None,
                "active": True}
        assert told == [[], [good]]  # at start, and once registered
        assert db.get_build_targets(active_only=False) == [Target(*host_target("cp311"))]
        refused = [r.getMessage() for r in caplog.records
                   if "target not registered" in r.getMessage()]
        assert len(refused) == 1 and "'abi3'" in refused[0], refused  # logged once
    finally:
        task._quit = True
        task.join(10)
        failed = task_failure(supervisor)
        ctx.destroy(linger=0)
    assert not task.is_alive()
    assert not failed, failed
