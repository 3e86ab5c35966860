"""The building blocks of :mod:`piwheels.protocols`: the field types its
schemas are made of, the size limits of what travels, and the
:class:`Protocol` record that names what each side of a socket may send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from voluptuous import Invalid, Schema

from . import limits
from .keys import KEY_ID_LENGTH


# --- field types --------------------------------------------------------------
#
# Each is one plain function (voluptuous' own extension point) rather than a
# composition like ``All(str, Length(...))``: the master checks several
# messages per build on both ends of every socket, and a composed validator
# costs five times the calls for the same verdict.


def text(min_len: int = 0, max_len: int = 200) -> Callable[[Any], str]:
    """A str of *min_len* to *max_len* characters."""
    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected str, not {type(value).__name__}")
        if not min_len <= len(value) <= max_len:
            raise Invalid(f"length {len(value)} is outside {min_len}..{max_len}")
        return value
    return validate


def blob(min_len: int = 0, max_len: int = 200) -> Callable[[Any], bytes]:
    """Bytes (or a received frame's memoryview) of *min_len* to *max_len* bytes."""
    def validate(value: Any) -> bytes:
        if not isinstance(value, (bytes, memoryview)):
            raise Invalid(f"expected bytes, not {type(value).__name__}")
        if not min_len <= len(value) <= max_len:
            raise Invalid(f"length {len(value)} is outside {min_len}..{max_len}")
        return value
    return validate


def number(minimum: Optional[float] = None, maximum: Optional[float] = None, *,
           above: bool = False, integer: bool = False) -> Callable[[Any], float]:
    """An int (or float, unless *integer*) within bounds; *above*: strictly above *minimum*."""
    kinds = (int,) if integer else (int, float)
    kind_name = "int" if integer else "number"

    def validate(value: Any) -> float:
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise Invalid(f"expected {kind_name}, not {type(value).__name__}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise Invalid(f"{value} is {'not above' if above else 'below'} {minimum}")
        if maximum is not None and value > maximum:
            raise Invalid(f"{value} is above {maximum}")
        return value
    return validate


def optional(validator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None, or what *validator* accepts."""
    def validate(value: Any) -> Any:
        return None if value is None else validator(value)
    return validate


def one_of(*choices: str) -> Callable[[Any], str]:
    """Exactly one of *choices*."""
    def validate(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}")
        return value
    return validate


def at_most(count: int, item: Callable[[Any], Any]) -> Callable[[Any], list]:
    """A list of at most *count* items, each what *item* accepts."""
    def validate(value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"expected a list, not {type(value).__name__}")
        if len(value) > count:
            raise Invalid(f"{len(value)} items is over the limit of {count}")
        return [item(element) for element in value]
    return validate


# --- size limits ---------------------------------------------------------------
#
# Each declared once; the field types below and the frame size every peer
# socket accepts (ZeroMQ's MAXMSGSIZE, see :mod:`piwheels.transport`) derive
# from them, so a frame that no valid message needs is cut off by ZeroMQ
# before the master allocates it.

#: the largest file-transfer chunk (``--chunk-size`` may not exceed it)
MAX_CHUNK_BYTES = 16 * 1024 * 1024
#: the longest build log BUILT carries, in characters (``--max-log-size`` fits)
MAX_LOG_CHARS = 2 * 1024 * 1024
#: the largest METADATA file of one wheel (a larger one is not accepted)
MAX_METADATA_BYTES = 2 * 1024 * 1024
#: the most wheels one BUILT reports (``pip wheel --no-deps`` makes one)
MAX_BUILT_FILES = 4
#: the most images a queued build names as having failed it (more are dropped:
#: a release that failed on that many images is not worth the queue's bytes)
MAX_FAILED_IMAGES = 32
#: the most items in a list field of a wheel's facts (Requires-Dist, apt packages)
MAX_FACT_ITEMS = 256
#: the longest Requires-Dist line, and apt package name
MAX_REQUIREMENT_CHARS = 1000
MAX_APT_NAME_CHARS = limits.DEPENDENCY
#: room for everything else in one frame: field names, short fields, msgpack's framing
ENVELOPE_BYTES = 64 * 1024
#: the most bytes one character takes in UTF-8
UTF8_MAX = 4
#: the frame limit where both ends are the master's own (inproc), or the peer
#: is the master itself (the monitor's SNAPSHOT)
MAX_TRUSTED_FRAME_BYTES = 64 * 1024 * 1024

# the widths of what is stored come from the one table of them (piwheels.limits)
Name = text(1, limits.NAME)
Version = text(1, limits.VERSION)
Tag = text(1, limits.TAG)
Label = text(1, limits.LABEL)
Builder = text(1, limits.BUILDER)
Text = text(0, 10_000)
Reason = optional(text(0, limits.REASON))
SkipReason = optional(text(0, limits.SKIP_REASON))
Filename = text(1, limits.FILENAME)
FilePath = text(1, 4096)
Platform = text(1, limits.TAG)
#: an OS release as a slave reports it ("Debian 12"), and as a target may be pinned to
OsRelease = text(1, limits.OS_RELEASE)
Log = text(0, MAX_LOG_CHARS)
Sha256 = text(limits.SHA256, limits.SHA256)


def _image(value: Any) -> str:
    """A builder image digest: lower-case hex sha256 (:mod:`piwheels.slave.image`)."""
    if not isinstance(value, str) or len(value) != limits.IMAGE or \
            value.strip("0123456789abcdef"):
        raise Invalid(f"expected {limits.IMAGE} lower-case hex digits")
    return value


Image = _image
Seconds = number(0)
PositiveSeconds = number(0, above=True)
Count = number(0, integer=True)
Size = number(1, integer=True)
SlaveId = number(1, integer=True)
ChunkLength = number(1, MAX_CHUNK_BYTES, integer=True)
#: a CURVE key's fingerprint (:func:`piwheels.keys.key_id`); None: no keys
KeyId = optional(text(KEY_ID_LENGTH, KEY_ID_LENGTH))
#: how a slave contains its builds ("bwrap 0.8.0"), or "none: <why>"
Containment = text(1, 200)
#: the prefix of a containment that contains nothing
UNCONTAINED = "none"
#: the most build targets the build queue tells the slave driver of
MAX_TARGETS = 1000


@dataclass(frozen=True)
class Protocol:
    """The messages one side of a socket may send (``sends``) and receive (``receives``)."""

    name: str
    sends: Mapping[str, Schema]
    receives: Mapping[str, Schema]
    #: where the socket is, for the master's internal (inproc) protocols
    address: Optional[str] = None
    #: message name -> its bulk field, sent as a frame after the message's own
    frames: Mapping[str, str] = field(default_factory=dict)
    #: the largest frame (bytes) of what this side sends and of what it receives
    max_frame: tuple[int, int] = (MAX_TRUSTED_FRAME_BYTES, MAX_TRUSTED_FRAME_BYTES)

    @property
    def max_receive_frame(self) -> int:
        """The largest frame this side accepts: its socket's MAXMSGSIZE."""
        return self.max_frame[1]

    def reverse(self) -> "Protocol":
        """The same protocol seen from the other end of the socket."""
        return Protocol(self.name, self.receives, self.sends, self.address, self.frames,
                        (self.max_frame[1], self.max_frame[0]))


def message(fields: dict[Any, Any] | None = None) -> Schema:
    """A payload schema: exactly these named fields (no extras, all required)."""
    return Schema(fields or {}, required=True)
