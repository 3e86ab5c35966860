"""Every message of every piwheels socket, declared once with its schema.

A :class:`Protocol` names the messages each side of a socket may send.  The
:mod:`piwheels.transport` wrapper checks every message against these schemas
when it is sent and when it is received, so a task only ever handles
well-formed messages.  Payloads are dicts with named fields, never
positional tuples.

Wire format: one msgpack-encoded ``[name, payload]`` frame per message (after
the routing frames ROUTER sockets add).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from voluptuous import All, Length, Range, Schema
from voluptuous import Any as AnyOf

#: Bumped whenever a message of the slave or file protocol changes shape.
PROTOCOL_VERSION = 1

# --- field types --------------------------------------------------------------

Name = All(str, Length(min=1, max=200))
Version = All(str, Length(min=1, max=200))
Tag = All(str, Length(min=1, max=100))
Label = All(str, Length(min=1, max=100))
Text = All(str, Length(max=10_000))
Reason = AnyOf(None, All(str, Length(max=500)))
Filename = All(str, Length(min=1, max=255))
Sha256 = All(str, Length(min=64, max=64))
Seconds = All(AnyOf(int, float), Range(min=0))
PositiveSeconds = All(AnyOf(int, float), Range(min=0, min_included=False))
Count = All(int, Range(min=0))
SlaveId = All(int, Range(min=1))


@dataclass(frozen=True)
class Protocol:
    """The messages one side of a socket may send (``sends``) and receive (``receives``)."""

    name: str
    sends: Mapping[str, Schema]
    receives: Mapping[str, Schema]
    #: where the socket is, for the master's internal (inproc) protocols
    address: Optional[str] = None

    def reverse(self) -> "Protocol":
        """The same protocol seen from the other end of the socket."""
        return Protocol(self.name, self.receives, self.sends, self.address)


def message(fields: dict[Any, Any] | None = None) -> Schema:
    """A payload schema: exactly these named fields (no extras, all required)."""
    return Schema(fields or {}, required=True)


# --- facts of one built wheel, as BUILT carries them ---------------------------------

FILE_FACTS = {
    "filename": Filename,
    "size": All(int, Range(min=1)),
    "sha256": Sha256,
    "package_tag": Name,
    "version_tag": Version,
    "py_tag": Tag,
    "abi_tag": Tag,
    "platform_tag": All(str, Length(min=1, max=200)),
    "requires_python": AnyOf(None, All(str, Length(max=200))),
    "requires_dist": [All(str, Length(max=1000))],
    "metadata": All(bytes, Length(max=10_000_000)),
    "metadata_sha256": Sha256,
    "apt_dependencies": [All(str, Length(min=1, max=255))],
}

BUILD_JOB = {"package": Name, "version": Version}

# a slave's machine, as its heartbeats report it (None: the platform cannot tell)
HOST_STATS = {
    "load_1m": AnyOf(None, All(AnyOf(int, float), Range(min=0))),
    "memory_free": AnyOf(None, Count),
    "disk_free": AnyOf(None, Count),
    "temperature_c": AnyOf(None, AnyOf(int, float)),
}

# --- slave protocol: slave (DEALER) -> master slave_driver (ROUTER) ---------

SLAVE_TO_MASTER = {
    # First words on a (fresh) connection.  ``building`` names a build still
    # running from before a reconnect, so it keeps its place.
    "HELLO": message({
        "protocol": int,
        "label": Label,
        "python_tag": Tag,
        "abi_tag": Tag,
        "platform_tag": All(str, Length(min=1, max=200)),
        "python_version": All(str, Length(min=1, max=50)),
        "pip_version": All(str, Length(min=1, max=50)),
        "os": All(str, Length(min=1, max=200)),
        "build_timeout_s": PositiveSeconds,
        "building": AnyOf(None, message(BUILD_JOB)),
    }),
    "IDLE": message({"stats": message(HOST_STATS)}),
    "BUSY": message({**BUILD_JOB, "stats": message(HOST_STATS)}),
    "BUILT": message({
        **BUILD_JOB,
        "success": bool,
        "duration_s": Seconds,
        "log": All(str, Length(max=20_000_000)),
        "reason": Reason,
        "files": [message(FILE_FACTS)],
    }),
    "SENT": message({"filename": Filename}),
    "BYE": message({"reason": Reason}),
}

MASTER_TO_SLAVE = {
    "ACK": message({
        "slave_id": SlaveId,
        "index_url": All(str, Length(min=1, max=1000)),
        "heartbeat_s": PositiveSeconds,
    }),
    "BUILD": message(BUILD_JOB),
    "SLEEP": message({"seconds": PositiveSeconds}),
    "CONT": message(),
    "SKIP": message({"reason": Reason}),
    "SEND": message({"filename": Filename}),
    "DONE": message(),
    "DIE": message({"reason": Reason}),
    # The master does not know this slave (it restarted, or dropped it):
    # say HELLO again on a fresh connection.
    "RESET": message({"reason": Reason}),
}

SLAVE = Protocol("slave", sends=SLAVE_TO_MASTER, receives=MASTER_TO_SLAVE)

# --- file transfer: slave (DEALER) -> master file_receiver (ROUTER) ----------

FILE_SLAVE_TO_MASTER = {
    # Announces the file the master asked for with SEND; the master pulls it.
    "OFFER": message({"slave_id": SlaveId, "filename": Filename,
                      "size": All(int, Range(min=1)), "sha256": Sha256}),
    # crc32 lets the master spot a chunk damaged on the way and fetch it again.
    "CHUNK": message({"filename": Filename, "offset": Count,
                      "data": All(bytes, Length(min=1, max=16 * 1024 * 1024)),
                      "crc32": All(int, Range(min=0, max=0xFFFFFFFF))}),
    # The slave cannot serve the file (it vanished, or a bad request).
    "MISSING": message({"filename": Filename, "reason": Reason}),
}

FILE_MASTER_TO_SLAVE = {
    "FETCH": message({"filename": Filename, "offset": Count,
                      "length": All(int, Range(min=1, max=16 * 1024 * 1024))}),
    "RECEIVED": message({"filename": Filename, "ok": bool, "reason": Reason}),
}

FILE_TRANSFER = Protocol("file", sends=FILE_SLAVE_TO_MASTER, receives=FILE_MASTER_TO_SLAVE)

# --- inside the master (inproc PUSH/PULL between tasks) ---------------------------

TASK_CONTROL = Protocol("task_control", sends={
    "PAUSE": message(),
    "RESUME": message(),
    "QUIT": message(),
}, receives={})

# build_queue -> slave_driver: the next builds for one ABI, best first.
# pypi_follower / admin -> slave_driver: stop building this (it went upstream).
BUILD_QUEUE = Protocol("build_queue", sends={
    "QUEUE": message({"abi_tag": Tag, "builds": [message(BUILD_JOB)]}),
    "CANCEL": message({"package": Name, "version": AnyOf(None, Version)}),
    # admin -> slave_driver: its builds were removed (piw-remove --builds): it may be
    # handed out again at once, though it was built a moment ago
    "REQUEUE": message({"package": Name, "version": AnyOf(None, Version)}),
}, receives={}, address="inproc://build_queue")

# slave_driver / build_recorder / pypi_follower -> build_queue
QUEUE_REQUESTS = Protocol("queue_requests", sends={
    # something changed (for this package, or anything): look again soon
    "REFRESH": message({"package": AnyOf(None, Name)}),
    # a slave for this ABI said HELLO: build for it unless an operator retired it
    "ABI": message({"abi_tag": Tag}),
}, receives={}, address="inproc://queue_requests")

# slave_driver -> file_receiver
TRANSFER_REQUESTS = Protocol("transfer_requests", sends={
    "EXPECT": message({
        "slave_id": SlaveId, "package": Name, "version": Version,
        "abi_tag": Tag, "platform_tag": All(str, Length(min=1, max=200)),
        "filename": Filename, "size": All(int, Range(min=1)), "sha256": Sha256,
    }),
    "ABANDON": message({"slave_id": SlaveId}),
}, receives={}, address="inproc://transfer_requests")

# file_receiver -> slave_driver
TRANSFER_RESULTS = Protocol("transfer_results", sends={
    "VERIFIED": message({"slave_id": SlaveId, "filename": Filename,
                         "path": All(str, Length(min=1, max=4096))}),
    "REJECTED": message({"slave_id": SlaveId, "filename": Filename, "reason": Reason}),
}, receives={}, address="inproc://transfer_results")

# slave_driver -> build_recorder
RECORD_REQUESTS = Protocol("record_requests", sends={
    "RECORD": message({
        **BUILD_JOB,
        "abi_tag": Tag,
        "slave_label": Label,
        "started": All(AnyOf(int, float), Range(min=0)),
        "duration_s": Seconds,
        "status": AnyOf("success", "failed", "rejected"),
        "reason": Reason,
        "log": All(str, Length(max=20_000_000)),
        "files": [Schema({**FILE_FACTS, "path": All(str, Length(min=1, max=4096))},
                         required=True)],
    }),
}, receives={}, address="inproc://record_requests")

# build_recorder / pypi_follower / admin -> index_writer
INDEX_REQUESTS = Protocol("index_requests", sends={
    "PACKAGE": message({"package": Name}),
    "HOME": message(),
    "ROOT": message(),  # the simple root, packages.json and the sitemap
    "ALL": message(),
}, receives={}, address="inproc://index_requests")

# any task -> the master's supervisor; QUIT from admin_service (piw-monitor's stop)
SUPERVISOR = Protocol("supervisor", sends={
    "FAILED": message({"task": str, "error": Text}),
    "QUIT": message({"reason": Reason}),
}, receives={}, address="inproc://supervisor")

# --- control: admin tools and monitors (DEALER) -> master admin_service (ROUTER) -----

SLAVE_ACTIONS = ("pause", "resume", "skip", "stop")
REBUILD_PARTS = ("home", "index", "project", "all")

CONTROL = Protocol("control", sends={
    # the monitor's first words: the whole picture, then it follows STATUS
    "SNAPSHOT": message(),
    "PAUSE": message(),
    "RESUME": message(),
    "QUIT": message(),
    # slave_id None: every slave
    "SLAVE": message({"action": AnyOf(*SLAVE_ACTIONS), "slave_id": AnyOf(None, SlaveId)}),
    "ADD": message({
        "package": Name, "version": AnyOf(None, Version),
        "skip": Reason, "unskip": bool, "yank": bool, "yank_reason": Reason,
        "unyank": bool, "alias": AnyOf(None, Name),
    }),
    "REMOVE": message({"package": Name, "version": AnyOf(None, Version),
                       "builds_only": bool, "skip": Reason}),
    "REBUILD": message({"part": AnyOf(*REBUILD_PARTS), "package": AnyOf(None, Name)}),
    "IMPORT": message({"path": All(str, Length(min=1, max=4096)),
                       "abi_tag": AnyOf(None, Tag), "label": Label}),
    "RECONCILE": message(),
    # hold new builds while the output directory has less free space than this
    "MIN_FREE_SPACE": message({"mib": Count}),
}, receives={
    "OK": message({"message": Text}),
    "ERROR": message({"message": Text}),
    "SNAPSHOT": message({"master": dict, "slaves": [dict]}),
    # REBUILD's reply: the master's status names this id while it follows the rewrite
    "REBUILDING": message({"message": Text, "rebuild_id": Count}),
})

# --- status: master admin_service (PUB) -> monitors (SUB) ---------------------------

STATUS = Protocol("status", sends={
    "MASTER": message({"master": dict}),
    "SLAVE": message({"slave": dict}),
    "SLAVE_GONE": message({"slave_id": SlaveId}),
}, receives={})

# tasks -> admin_service: what the monitor should see
STATUS_REPORTS = Protocol("status_reports", sends={
    "SLAVE": message({"slave": dict}),
    "SLAVE_GONE": message({"slave_id": SlaveId}),
    "TASK": message({"task": str, "status": dict}),
}, receives={}, address="inproc://status_reports")

# admin_service / stats -> slave_driver
DRIVER_COMMANDS = Protocol("driver_commands", sends={
    # builds are handed out only while no reason to hold them is set
    "HOLD": message({"reason": All(str, Length(min=1, max=100))}),
    "RELEASE": message({"reason": All(str, Length(min=1, max=100))}),
    "SLAVE": message({"action": AnyOf(*SLAVE_ACTIONS), "slave_id": AnyOf(None, SlaveId)}),
}, receives={}, address="inproc://driver_commands")

# admin_service -> stats
STATS_COMMANDS = Protocol("stats_commands", sends={
    "MIN_FREE": message({"bytes": Count}),
}, receives={}, address="inproc://stats_commands")

# admin_service -> pypi_follower
FOLLOWER_COMMANDS = Protocol("follower_commands", sends={
    "RECONCILE": message(),
}, receives={}, address="inproc://follower_commands")

ALL_PROTOCOLS = (
    SLAVE, FILE_TRANSFER, TASK_CONTROL, BUILD_QUEUE, QUEUE_REQUESTS,
    TRANSFER_REQUESTS, TRANSFER_RESULTS, RECORD_REQUESTS, INDEX_REQUESTS,
    SUPERVISOR, CONTROL, STATUS, STATUS_REPORTS, DRIVER_COMMANDS, FOLLOWER_COMMANDS,
    STATS_COMMANDS,
)
