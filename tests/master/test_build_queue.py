"""build_queue alone: an ABI it is asked to register is checked before its table.

The task runs in its thread on real inproc sockets and a real database; the
test plays the slave driver.  The driver refuses slaves with bad tags, so this
is the second line: a bad ABI that reaches build_queue is logged and dropped,
and the task goes on serving the good ones.
"""

from __future__ import annotations

import time

import zmq
from farm import recv, task_failure

from piwheels.master.build_queue import BuildQueue
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, QUEUE_REQUESTS, SUPERVISOR
from piwheels.transport import Socket


def test_bad_abis_are_dropped_and_good_ones_served(db, master_dsn, caplog):
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
        for bad in ("abi3", "none", "CP311", "cp311 "):
            requests.send("ABI", {"abi_tag": bad})
        requests.send("ABI", {"abi_tag": "cp311"})
        # the good ABI's queue comes, so the task lived through the bad ones
        deadline = time.monotonic() + 10
        told = []  # the ABIs the driver is told the farm knows, each time they change
        while time.monotonic() < deadline:
            name, page = recv(queue)
            if name == "ABIS":
                told.append(page["abi_tags"])
            elif page["abi_tag"] == "cp311":
                break
        assert (name, page["abi_tag"]) == ("QUEUE", "cp311")
        assert told == [[], ["cp311"]]  # at start, and once registered
        assert db.get_build_abis(active_only=False) == ["cp311"]
        refused = [r.getMessage() for r in caplog.records if "ABI not registered" in r.getMessage()]
        assert len(refused) == 1 and "'abi3'" in refused[0], refused  # logged once
    finally:
        task._quit = True
        task.join(10)
        failed = task_failure(supervisor)
        ctx.destroy(linger=0)
    assert not task.is_alive()
    assert not failed, failed
