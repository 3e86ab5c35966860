"""Every message of every piwheels socket, declared once with its schema.

A :class:`Protocol` names the messages each side of a socket may send.  The
:mod:`piwheels.transport` wrapper checks every message against these schemas
when it is sent and when it is received, so a task only ever handles
well-formed messages.  Payloads are dicts with named fields, never
positional tuples.  The one record a payload carries, a wheel's facts
(:class:`WheelFacts`), is declared here too, each field with its schema.

Wire format: one msgpack-encoded ``[name, payload]`` frame per message (after
the routing frames ROUTER sockets add).  A message may name one bulk field
(CHUNK's ``data``) that travels as a second frame of its own, so neither end
copies it in or out of msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Optional

from voluptuous import Invalid
from voluptuous import Optional as Absent

from . import limits
from .build_policy import MAX_SPEC_LENGTH
from .debian_lookup import valid_package
from .diagnosis import CAUSES
from .project_status import PROJECT_STATUSES
from .protocol_fields import (
    text, blob, number, optional, one_of, at_most,
    MAX_CHUNK_BYTES, MAX_LOG_CHARS, MAX_METADATA_BYTES, MAX_BUILT_FILES, MAX_FAILED_IMAGES, MAX_FACT_ITEMS,
    MAX_REQUIREMENT_CHARS, MAX_APT_NAME_CHARS, ENVELOPE_BYTES, UTF8_MAX, MAX_TRUSTED_FRAME_BYTES, Name,
    Version, Tag, Label, Builder, Text, Reason,
    SkipReason, Filename, FilePath, Platform, Log, Sha256,
    Image, Seconds, PositiveSeconds, Count, Size, SlaveId,
    ChunkLength, KeyId, Containment, MAX_TARGETS, OsRelease, Protocol, message,
)
from .smoke import SMOKE_STATUSES

#: Bumped whenever a message of the slave or file protocol changes shape.
#: 2: CHUNK's data travels as a frame of its own.
#: 3: HELLO says whether the slave's builds are contained.
#: 4 (issue 14): SLEEP may say 0 s (ask again now: idle slaves are parked, then
#:    told so); HELLO carries the builder's image digest and the platform tags
#:    its interpreter accepts; BUILT carries each wheel's smoke test and the
#:    builder's diagnosis of a failed build.
#: 5 (issue 15): a slave builds for its target, the ABI *and* platform of its
#:    HELLO, and only that target's jobs; HELLO's ``os`` is its OS release
#:    ("Debian 12"), which a target may be pinned to; BUILT is refused when a
#:    wheel's platform is not one HELLO's ``platforms`` lists.
PROTOCOL_VERSION = 5

# --- facts of one built wheel, as BUILT carries them ---------------------------------


def fact(label: str, schema: Callable[[Any], Any],
         decode: Callable[[Any], Any] = lambda value: value, *, checked: bool = True) -> Any:
    """A field of :class:`WheelFacts`: what a reason calls it, its message schema,
    and how its received (msgpack) value becomes the record's (lists become
    tuples, frames bytes).  *checked*: the master computes it from the file
    itself; otherwise only the builder can know it, and it stays the builder's
    claim."""
    return field(metadata={"label": label, "schema": schema, "decode": decode,
                           "checked": checked})


@dataclass(frozen=True)
class WheelFacts:
    """The facts of one wheel file: what the slave claims in BUILT, and what the
    master computes from the file it received, compares with the claim, records
    and publishes.  The one declaration of them: the BUILT, EXPECT, VERIFIED and
    RECORD schemas (:data:`FILE_FACTS`), the message dict, the file receiver's
    record of what it expects, the database rows and what is read back of them
    (:mod:`piwheels.db_files`) all derive from these fields and their names."""

    filename: str = fact("file name", Filename)
    size: int = fact("size", Size, int)
    sha256: str = fact("SHA-256", Sha256)
    package_tag: str = fact("name tag", Name)
    version_tag: str = fact("version tag", Version)
    py_tag: str = fact("Python tag", Tag)
    abi_tag: str = fact("ABI tag", Tag)
    platform_tag: str = fact("platform tag", Platform)
    requires_python: Optional[str] = fact(
        "Requires-Python", optional(text(0, limits.REQUIRES_PYTHON)))
    requires_dist: tuple[str, ...] = fact(
        "Requires-Dist", at_most(MAX_FACT_ITEMS, text(0, MAX_REQUIREMENT_CHARS)), tuple)
    metadata: bytes = fact("METADATA", blob(0, MAX_METADATA_BYTES), bytes)
    metadata_sha256: str = fact("METADATA SHA-256", Sha256)
    #: the Debian packages its libraries link to: only the builder's system can tell
    apt_dependencies: tuple[str, ...] = fact(
        "apt dependencies", at_most(MAX_FACT_ITEMS, text(1, MAX_APT_NAME_CHARS)), tuple,
        checked=False)

    def to_dict(self) -> dict[str, Any]:
        """The facts as a message field: plain types only (tuples become lists)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in ((f.name, getattr(self, f.name)) for f in fields(self))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WheelFacts":
        """The inverse of :meth:`to_dict`; keys that are not facts (RECORD's
        ``path``) are ignored."""
        return cls(**{f.name: f.metadata["decode"](data[f.name]) for f in fields(cls)})


#: the schema of one wheel's facts in a message, derived from :class:`WheelFacts`
FILE_FACTS = {f.name: f.metadata["schema"] for f in fields(WheelFacts)}
#: the facts of a file the master received and checked, and where it waits
RECEIVED_FILE = {**FILE_FACTS, "path": FilePath}


def _file_identity() -> dict[str, Callable[[Any], Any]]:
    """The facts that name a file in transfer: what the slave OFFERs and the file
    receiver holds against what BUILT claimed."""
    return {name: FILE_FACTS[name] for name in ("filename", "size", "sha256")}


#: the encoded size of the largest facts of one wheel
MAX_FILE_FACTS_BYTES = (
    ENVELOPE_BYTES + MAX_METADATA_BYTES
    + MAX_FACT_ITEMS * UTF8_MAX * (MAX_REQUIREMENT_CHARS + MAX_APT_NAME_CHARS))

#: the smoke test of one wheel, as its builder reports it (see piwheels.smoke)
SMOKE_RESULT = {
    "filename": Filename,
    "status": one_of(*SMOKE_STATUSES),
    "detail": optional(text(0, limits.CAUSE_DETAIL)),
    "package": optional(text(1, limits.DEBIAN_PACKAGE)),
}
#: the smoke tests of a build's wheels; None: not tested (the slave runs without
#: the test).  Left out, it is None: the master's own senders of RECORD (piw-import)
#: and hand-driven peers need not name it.
SmokeResults = optional(at_most(MAX_BUILT_FILES, message(SMOKE_RESULT)))
SMOKE_FIELD = Absent("smoke", default=None)

BUILD_JOB = {"package": Name, "version": Version}
#: a build target as the farm keeps it: an ABI on a platform, the OS release it
#: is pinned to (None: any) and whether the farm builds for it
TARGET = {"abi_tag": Tag, "platform_tag": Platform, "os_release": optional(OsRelease),
          "active": bool}
#: The most platform tags a HELLO lists (a glibc builder lists about 40).
MAX_PLATFORMS = 200
#: The most upstream wheels of one release a queued build names.
MAX_UPSTREAM_WHEELS = 1000

#: a build in the queue; one that failed once for the ABI names the builder that
#: failed it and when (epoch seconds), so the driver offers it to another first,
#: and the images it failed on for a deterministic cause, never offered it again.
#: Its Requires-Python and the wheels upstream serves for it (the latter empty
#: when the operator builds releases upstream has wheels of) let the driver
#: skip it for a slave that need not build it (:mod:`piwheels.upstream_wheels`).
QUEUED_JOB = {**BUILD_JOB, "failed_by": optional(Builder), "failed_at": optional(Seconds),
              "failed_images": at_most(MAX_FAILED_IMAGES, Image),
              "requires_python": optional(text(1, limits.REQUIRES_PYTHON)),
              "upstream_wheels": at_most(MAX_UPSTREAM_WHEELS, Filename)}

# a slave's machine, as its heartbeats report it (None: the platform cannot tell)
HOST_STATS = {
    "load_1m": optional(number(0)),
    "memory_free": optional(Count),
    "disk_free": optional(Count),
    "temperature_c": optional(number()),
}

def debian_package(value: Any) -> str:
    """A Debian package's name (Debian Policy 5.6.1), within its column's width."""
    if not isinstance(value, str) or not valid_package(value):
        raise Invalid("expected a Debian package name")
    return value


#: why a failed attempt failed (:mod:`piwheels.diagnosis`): its cause code, one
#: line of detail, and the Debian package that provides what it missed, if known
DIAGNOSIS = {
    "cause": one_of(*CAUSES),
    "detail": text(0, limits.CAUSE_DETAIL),
    "package": optional(debian_package),
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
        "platform_tag": Platform,
        "python_version": text(1, 50),
        "pip_version": text(1, 50),
        # the OS release ("Debian 12", from os-release): recorded with each
        # attempt; a target pinned to another refuses the slave
        "os": OsRelease,
        # the digest of what decides a build's outcome on this builder
        "image": Image,
        "build_timeout_s": PositiveSeconds,
        "building": optional(message(BUILD_JOB)),
        "containment": Containment,
        # the platform tags the interpreter accepts, in packaging.tags.sys_tags()
        # order, each once: which upstream wheels it could install, and which
        # platforms its own wheels may carry
        "platforms": at_most(MAX_PLATFORMS, Platform),
    }),
    "IDLE": message({"stats": message(HOST_STATS)}),
    "BUSY": message({**BUILD_JOB, "stats": message(HOST_STATS)}),
    "BUILT": message({
        **BUILD_JOB,
        "success": bool,
        "duration_s": Seconds,
        "log": Log,
        "reason": Reason,
        "files": at_most(MAX_BUILT_FILES, message(FILE_FACTS)),
        SMOKE_FIELD: SmokeResults,
        # a failed build's cause as the builder saw it (its claim: the master
        # diagnoses the log again), and the package its lookup named; may be absent
        Absent("diagnosis", default=None): optional(message(DIAGNOSIS)),
    }),
    "SENT": message({"filename": Filename}),
    "BYE": message({"reason": Reason}),
}

MASTER_TO_SLAVE = {
    "ACK": message({
        "slave_id": SlaveId,
        "index_url": text(1, 1000),
        "heartbeat_s": PositiveSeconds,
    }),
    "BUILD": message(BUILD_JOB),
    # 0 s: it was parked a heartbeat without a job (master/parking.py); ask again now
    "SLEEP": message({"seconds": Seconds}),
    "CONT": message(),
    "SKIP": message({"reason": Reason}),
    "SEND": message({"filename": Filename}),
    "DONE": message(),
    "DIE": message({"reason": Reason}),
    # The master does not know this slave (it restarted, or dropped it):
    # say HELLO again on a fresh connection.
    "RESET": message({"reason": Reason}),
}

#: the largest frame of the slave protocol: a BUILT with the longest log and
#: the most, largest facts
MAX_SLAVE_FRAME_BYTES = ENVELOPE_BYTES + UTF8_MAX * MAX_LOG_CHARS + MAX_BUILT_FILES * MAX_FILE_FACTS_BYTES

SLAVE = Protocol("slave", sends=SLAVE_TO_MASTER, receives=MASTER_TO_SLAVE,
                 max_frame=(MAX_SLAVE_FRAME_BYTES, ENVELOPE_BYTES))

# --- file transfer: slave (DEALER) -> master file_receiver (ROUTER) ----------

FILE_SLAVE_TO_MASTER = {
    # Announces the file the master asked for with SEND; the master pulls it.
    "OFFER": message({"slave_id": SlaveId, **_file_identity()}),
    # crc32 lets the master spot a chunk damaged on the way and fetch it again.
    "CHUNK": message({"filename": Filename, "offset": Count,
                      "data": blob(1, MAX_CHUNK_BYTES),
                      "crc32": number(0, 0xFFFFFFFF, integer=True)}),
    # The slave cannot serve the file (it vanished, or a bad request).
    "MISSING": message({"filename": Filename, "reason": Reason}),
}

FILE_MASTER_TO_SLAVE = {
    "FETCH": message({"filename": Filename, "offset": Count,
                      "length": ChunkLength}),
    "RECEIVED": message({"filename": Filename, "ok": bool, "reason": Reason}),
}

#: a CHUNK's data travels in a frame of its own, so no frame is larger than a chunk
FILE_TRANSFER = Protocol("file", sends=FILE_SLAVE_TO_MASTER, receives=FILE_MASTER_TO_SLAVE,
                         frames={"CHUNK": "data"},
                         max_frame=(max(MAX_CHUNK_BYTES, ENVELOPE_BYTES), ENVELOPE_BYTES))

# --- inside the master (inproc PUSH/PULL between tasks) ---------------------------

TASK_CONTROL = Protocol("task_control", sends={
    "PAUSE": message(),
    "RESUME": message(),
    "QUIT": message(),
}, receives={})

# build_queue -> slave_driver: the next builds for one target (abi_tag,
# platform_tag), best first.
# pypi_follower / admin -> slave_driver: stop building this (it went upstream).
BUILD_QUEUE = Protocol("build_queue", sends={
    # the queue from its head: replaces what the driver had
    "QUEUE": message({"abi_tag": Tag, "platform_tag": Platform,
                      "builds": [message(QUEUED_JOB)]}),
    # the builds that follow the last ones sent (the answer to MORE)
    "EXTEND": message({"abi_tag": Tag, "platform_tag": Platform,
                       "builds": [message(QUEUED_JOB)]}),
    # the queue from its head after the build policy changed: replaces all the
    # driver had, so nothing the policy now leaves out is handed out
    "REPLACE": message({"abi_tag": Tag, "platform_tag": Platform,
                        "builds": [message(QUEUED_JOB)]}),
    "CANCEL": message({"package": Name, "version": optional(Version)}),
    # admin -> slave_driver: its builds were removed (piw-remove --builds): it may be
    # handed out again at once, though it was built a moment ago
    "REQUEUE": message({"package": Name, "version": optional(Version)}),
    # every target the farm knows (active or retired), and the OS release each is
    # pinned to (None: any): a slave without an enrolled key may build only for one
    # of these, and only a slave of the pinned release for a pinned one
    "TARGETS": message({"targets": at_most(MAX_TARGETS, message(TARGET))}),
}, receives={}, address="inproc://build_queue")

# slave_driver / build_recorder / pypi_follower -> build_queue
QUEUE_REQUESTS = Protocol("queue_requests", sends={
    # something changed (for this package, or anything): look again soon
    "REFRESH": message({"package": optional(Name)}),
    # an enrolled slave for this target said HELLO: build for it unless an operator
    # retired it (a slave without a key never adds a target)
    "TARGET": message({"abi_tag": Tag, "platform_tag": Platform}),
    # the driver is running low on this target's builds: send the ones after the last sent
    "MORE": message({"abi_tag": Tag, "platform_tag": Platform}),
    # slave_driver: a slave of this target presents this image (os: its OS release); a
    # first sight re-opens what failed for a cause a new image may fix
    "IMAGE": message({"abi_tag": Tag, "platform_tag": Platform, "image": Image,
                      "os": OsRelease}),
    # admin -> build_queue: the build policy of this project (None: the farm) changed;
    # weigh its releases again and send every ABI's queue afresh
    "POLICY": message({"package": optional(Name)}),
}, receives={}, address="inproc://queue_requests")

# slave_driver -> file_receiver
TRANSFER_REQUESTS = Protocol("transfer_requests", sends={
    # the builder's tags (builder_platforms: all its interpreter accepts), and the
    # facts it claims in BUILT for the file; key_id: the slave's key, which the
    # file's sender must have too
    "EXPECT": message({
        "slave_id": SlaveId, "package": Name, "version": Version,
        "builder_abi": Tag, "builder_platform": Platform,
        "builder_platforms": at_most(MAX_PLATFORMS, Platform), "key_id": KeyId,
        "claimed": message(FILE_FACTS),
    }),
    "ABANDON": message({"slave_id": SlaveId}),
}, receives={}, address="inproc://transfer_requests")

# file_receiver -> slave_driver
TRANSFER_RESULTS = Protocol("transfer_results", sends={
    # the facts the receiver computed from the file (the claim's apt dependencies)
    "VERIFIED": message({"slave_id": SlaveId, "file": message(RECEIVED_FILE)}),
    # retry: not the wheel's fault (no disk space, too slow a transfer): the
    # build goes back to the queue instead of being recorded as rejected
    "REJECTED": message({"slave_id": SlaveId, "filename": Filename, "reason": Reason,
                         "retry": bool}),
}, receives={}, address="inproc://transfer_results")

# a file_receiver's check thread -> file_receiver: the whole-wheel check of one
# received file is done (facts: what the file says; None and reason: why not)
WHEEL_CHECKS = Protocol("wheel_checks", sends={
    "CHECKED": message({"check_id": Count, "facts": optional(message(FILE_FACTS)),
                        "reason": Reason}),
}, receives={}, address="inproc://wheel_checks")

# slave_driver -> build_recorder
RECORD_REQUESTS = Protocol("record_requests", sends={
    "RECORD": message({
        **BUILD_JOB,
        "abi_tag": Tag,
        "platform_tag": Platform,
        # the builder's OS release (None, or absent: not known, e.g. piw-import)
        Absent("os_release", default=None): optional(OsRelease),
        "slave_label": Label,
        "builder": Builder,
        "started": Seconds,
        "duration_s": Seconds,
        "status": one_of("success", "failed", "rejected"),
        "reason": Reason,
        "log": Log,
        # as VERIFIED reported them: computed by the master, not BUILT's claims
        "files": [message(RECEIVED_FILE)],
        # BUILT's smoke tests: the builder's claim
        SMOKE_FIELD: SmokeResults,
        # the builder's image (None, or absent: not a builder's attempt)
        Absent("image", default=None): optional(Image),
        # BUILT's diagnosis, the builder's claim: the recorder checks it against its own
        Absent("claimed_diagnosis", default=None): optional(message(DIAGNOSIS)),
    }),
    # a release the driver did not hand to a slave of this target, and why
    # (piwheels.upstream_wheels): stored in build_skips
    "SKIP": message({
        **BUILD_JOB,
        "abi_tag": Tag,
        "platform_tag": Platform,
        "cause": text(1, limits.CAUSE),
        "detail": text(1, limits.CAUSE_DETAIL),
    }),
}, receives={}, address="inproc://record_requests")

# build_recorder / pypi_follower / admin -> index_writer
INDEX_REQUESTS = Protocol("index_requests", sends={
    "PACKAGE": message({"package": Name}),
    # an operator's piw-rebuild of one project: its files are compared with the
    # disk (what was changed there is repaired), whatever its fingerprint says
    "REWRITE": message({"package": Name}),
    "HOME": message(),
    "ROOT": message(),  # the simple root, packages.json and the sitemap
    "ALL": message(),
}, receives={}, address="inproc://index_requests")

# any task -> the master's supervisor; QUIT from admin_service (piw-monitor's stop)
SUPERVISOR = Protocol("supervisor", sends={
    # each task once its on_start is done: the master is ready when all are
    "STARTED": message({"task": str}),
    "FAILED": message({"task": str, "error": Text}),
    "QUIT": message({"reason": Reason}),
}, receives={}, address="inproc://supervisor")

# --- control: admin tools and monitors (DEALER) -> master admin_service (ROUTER) -----

SLAVE_ACTIONS = ("pause", "resume", "skip", "stop")
#: the largest --min-free-space (MiB) whose byte count still fits a signed 64-bit int
MAX_FREE_SPACE_MIB = 2**43 - 1
REBUILD_PARTS = ("home", "index", "project", "all")
#: what a BULK request does to what it names
BULK_ACTIONS = ("skip", "unskip", "remove", "remove_builds", "skip_builds")
#: POLICY's pre-release switch: on, off, or (for a project) as the farm has it
PRERELEASE_SETTINGS = ("on", "off", "farm")
#: where a failed attempt leaves its release for that ABI: waiting for its retry,
#: failed for good (the retry failed too), or built since
FAILURE_OUTCOMES = ("retrying", "counts", "built since")
#: the most failures one FAILURES reply lists
MAX_FAILURES_LISTED = 1000
#: one unsuccessful attempt, as piw-control failures shows it
FAILURE = {
    "build_id": Count, "package": Name, "version": Version, "abi_tag": Tag,
    "platform_tag": Platform, "builder": Builder, "slave_label": Label, "started": Seconds,
    "status": one_of("failed", "rejected"), "reason": Reason,
    "outcome": one_of(*FAILURE_OUTCOMES),
}

CONTROL = Protocol("control", sends={
    # the monitor's first words: the whole picture, then it follows STATUS
    "SNAPSHOT": message(),
    "PAUSE": message(),
    "RESUME": message(),
    "QUIT": message(),
    # slave_id None: every slave
    "SLAVE": message({"action": one_of(*SLAVE_ACTIONS), "slave_id": optional(SlaveId)}),
    "ADD": message({
        "package": Name, "version": optional(Version),
        "skip": SkipReason, "unskip": bool, "yank": bool, "yank_reason": Reason,
        "unyank": bool, "alias": optional(Name),
    }),
    "REMOVE": message({"package": Name, "version": optional(Version),
                       "builds_only": bool, "skip": SkipReason}),
    "REBUILD": message({"part": one_of(*REBUILD_PARTS), "package": optional(Name)}),
    # abi_tag, platform_tag: the target the wheel was built for (None: what its
    # tags say)
    "IMPORT": message({"path": FilePath, "abi_tag": optional(Tag),
                       "platform_tag": optional(Platform), "label": Label}),
    "RECONCILE": message(),
    # an operator's word on a build target: the farm builds for it (active) or no
    # longer does, pinned to an OS release or not (None: any); the one way to add
    # a target besides a slave with an enrolled key
    "TARGET": message(TARGET),
    # an operator's PEP 792 status for a project ("active" clears it)
    "PROJECT_STATUS": message({"package": Name, "status": one_of(*PROJECT_STATUSES),
                               "reason": Reason}),
    # hold new builds while the output directory has less free space than this
    "MIN_FREE_SPACE": message({"mib": number(0, MAX_FREE_SPACE_MIB, integer=True)}),
    # piw-add --skip / piw-remove over a pattern of names or versions or a version
    # list; dry_run: only count what would change (the MATCHED reply)
    "BULK": message({"action": one_of(*BULK_ACTIONS), "package": Name,
                     "versions": optional(text(1, 10_000)), "reason": SkipReason,
                     "dry_run": bool}),
    # the farm's (package None) or a project's build policy: a SPEC ("farm": the
    # project follows the farm's) and/or the pre-release switch; both None: say
    # what is in force
    "POLICY": message({"package": optional(Name),
                       "policy": optional(text(1, MAX_SPEC_LENGTH)),
                       "prereleases": optional(one_of(*PRERELEASE_SETTINGS))}),
    # the latest failed attempts (of one project, or all): who made each
    "FAILURES": message({"package": optional(Name),
                         "limit": number(1, MAX_FAILURES_LISTED, integer=True)}),
}, receives={
    "OK": message({"message": Text}),
    "ERROR": message({"message": Text}),
    "SNAPSHOT": message({"master": dict, "slaves": [dict]}),
    # REBUILD's reply: the master's status names this id while it follows the rewrite
    "REBUILDING": message({"message": Text, "rebuild_id": Count}),
    # BULK's dry run: what would change, and how many things
    "MATCHED": message({"message": Text, "changes": Count}),
    "FAILURES": message({"failures": at_most(MAX_FAILURES_LISTED, message(FAILURE))}),
}, max_frame=(ENVELOPE_BYTES, MAX_TRUSTED_FRAME_BYTES))

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
    "HOLD": message({"reason": text(1, 100)}),
    "RELEASE": message({"reason": text(1, 100)}),
    "SLAVE": message({"action": one_of(*SLAVE_ACTIONS), "slave_id": optional(SlaveId)}),
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
    TRANSFER_REQUESTS, TRANSFER_RESULTS, WHEEL_CHECKS, RECORD_REQUESTS, INDEX_REQUESTS,
    SUPERVISOR, CONTROL, STATUS, STATUS_REPORTS, DRIVER_COMMANDS, FOLLOWER_COMMANDS,
    STATS_COMMANDS,
)
