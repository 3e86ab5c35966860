"""Wheel tags and build targets: what a valid tag is, and which targets a wheel serves.

A build target is an ABI on a platform (:class:`Target`): (cp311,
linux_aarch64) and (cp311, linux_armv7l) are two, each with its own queue.
Pure rules, no I/O.  The slave driver checks a HELLO's tags with them, the
build queue, piw-import and the admin service check a target before it is
stored, and the project pages decide each version × target cell with them.
The database decides the build queue with the same rule in SQL
(``abi_python_version``, ``wheel_serves`` and ``needs_build`` in
sql/create_piwheels.sql);
``tests/test_tags.py`` runs both over one table of cases and asserts they
agree.  A failed attempt does not settle a release until it is retried
(:data:`FAILURES_THAT_COUNT`), unless it failed for a deterministic cause on
an image no other could retry; and a failure a new image may fix stops
counting once the target has a newer image (:func:`failures_settle`).

Tag syntax follows :mod:`packaging.tags`: a tag is what
:class:`packaging.tags.Tag` makes of it unchanged (lower-case), one tag and not
a compressed set (no ``.``), and made of letters, digits and ``_``.  The farm
adds its own rule for an ABI it builds for: a concrete ABI with a Python
version (``cp311``, ``cp313t``, ``pypy310_pp73``), never ``none`` or ``abi3``
(those are what a wheel may say, not what a builder runs).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Iterable, Mapping, NamedTuple, Optional

from packaging.tags import Tag, parse_tag

from . import limits
from .diagnosis import CAUSES
from .errors import InvalidRequest

#: letters, digits and underscores: one tag, not a compressed set
_TAG_CHARS = re.compile(r"[a-z0-9_]+")
#: an interpreter tag: an abbreviation and a version (cp311, py3, pp310)
_PYTHON_TAG = re.compile(r"[a-z]+[0-9]+")
#: a concrete ABI the build queue can order: a name and a Python version of two
#: digits or more, as sql/create_piwheels.sql's abi_python_version reads it
_BUILD_ABI = re.compile(r"([a-z]+)([0-9])([0-9]+)[a-z0-9_]*")
#: ABIs a wheel may say but no builder runs
GENERIC_ABIS = frozenset({"none", "abi3"})


class InvalidTag(InvalidRequest):
    """A wheel tag or build ABI that breaks the rules; its message says why."""


def _syntax_problem(kind: str, tag: object) -> Optional[str]:
    if not isinstance(tag, str):
        return f"{kind} {tag!r} is not a string"
    if not tag:
        return f"{kind} is empty"
    if len(tag) > limits.TAG:
        return f"{kind} is {len(tag)} characters long (at most {limits.TAG})"
    if Tag(tag, "none", "any").interpreter != tag:
        return f"{kind} {tag!r} is not lower-case"
    if not _TAG_CHARS.fullmatch(tag):
        return f"{kind} {tag!r} may hold only letters, digits and '_'"
    return None


def python_tag_problem(tag: object) -> Optional[str]:
    """Why *tag* is not an interpreter tag a builder can run (None: it is)."""
    problem = _syntax_problem("python tag", tag)
    if problem is None and not _PYTHON_TAG.fullmatch(tag):
        problem = f"python tag {tag!r} is not an interpreter and version (like cp311 or py3)"
    return problem


def build_abi_problem(tag: object) -> Optional[str]:
    """Why *tag* is not an ABI the farm can build for (None: it is)."""
    problem = _syntax_problem("ABI tag", tag)
    if problem is None and tag in GENERIC_ABIS:
        problem = f"ABI tag {tag!r} is what a wheel says, not an ABI a builder runs"
    elif problem is None and not _BUILD_ABI.fullmatch(tag):
        problem = f"ABI tag {tag!r} is not a concrete ABI with a Python version (like cp311)"
    return problem


def platform_tag_problem(tag: object) -> Optional[str]:
    """Why *tag* is not a platform a builder runs on (None: it is)."""
    problem = _syntax_problem("platform tag", tag)
    if problem is None and tag == "any":
        problem = "platform tag 'any' is what a wheel says, not a platform a builder runs on"
    return problem


def builder_problem(python_tag: object, abi_tag: object, platform_tag: object) -> Optional[str]:
    """Why a builder with these tags cannot join the farm (None: it can)."""
    return (python_tag_problem(python_tag) or build_abi_problem(abi_tag)
            or platform_tag_problem(platform_tag))


class Target(NamedTuple):
    """A build target: an ABI on a platform.  ``str()`` gives "cp311 linux_aarch64"."""

    abi_tag: str
    platform_tag: str

    def __str__(self) -> str:
        return f"{self.abi_tag} {self.platform_tag}"

    @classmethod
    def from_key(cls, key: str) -> "Target":
        """The target a ``str(target)`` names (the key of per-target counts)."""
        abi_tag, _, platform_tag = key.partition(" ")
        return cls(abi_tag, platform_tag)

    @property
    def label(self) -> str:
        """A short heading for a column of this target: "cp311 aarch64" (the
        ``linux_`` most platforms share left out)."""
        return f"{self.abi_tag} {self.platform_tag.removeprefix('linux_')}"


def target_problem(abi_tag: object, platform_tag: object) -> Optional[str]:
    """Why (*abi_tag*, *platform_tag*) is not a target the farm can build for (None: it is)."""
    return build_abi_problem(abi_tag) or platform_tag_problem(platform_tag)


def check_target(abi_tag: object, platform_tag: object) -> Target:
    """The target, if the farm can build for it; else :class:`InvalidTag` with the reason."""
    problem = target_problem(abi_tag, platform_tag)
    if problem is not None:
        raise InvalidTag(problem)
    return Target(abi_tag, platform_tag)


def target_key(target: tuple[str, str]) -> tuple[tuple[int, int], str, str]:
    """Sort key for targets: by Python version, then ABI, then platform (as the
    database lists them)."""
    return abi_version(target[0]), target[0], target[1]


def check_build_abi(tag: object) -> str:
    """*tag*, if the farm can build for it; else :class:`InvalidTag` with the reason."""
    problem = build_abi_problem(tag)
    if problem is not None:
        raise InvalidTag(problem)
    return tag


def abi_version(tag: str) -> tuple[int, int]:
    """The Python version a tag names, so ABIs compare by it: cp39 < cp311.

    (0, 0) for a tag without one (``py3``, ``none``): the same reading as
    ``abi_python_version`` in sql/create_piwheels.sql.
    """
    match = re.match(r"[a-z]+([0-9])([0-9]+)", tag)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def build_abi_key(tag: str) -> tuple[tuple[int, int], str]:
    """Sort key for build ABIs: by Python version, then by name (as the database lists them)."""
    return abi_version(tag), tag


@lru_cache(maxsize=4096)
def _platforms(py_tag: str, wheel_abi: str, wheel_platform: str) -> frozenset[str]:
    """The platforms of a (possibly compressed) tag set, as packaging expands it."""
    return frozenset(tag.platform for tag in parse_tag(f"{py_tag}-{wheel_abi}-{wheel_platform}"))


def wheel_serves(py_tag: str, wheel_abi: str, wheel_platform: str,
                 target: tuple[str, str]) -> bool:
    """Whether a wheel tagged *py_tag*-*wheel_abi*-*wheel_platform* serves builds
    for *target* (abi, platform): its platform is ``any`` or the target's, and its
    ABI ``none``, the target's own, or ``abi3`` of the target's Python version or
    an older one.  So a pure wheel serves every target, an abi3 wheel later ABIs
    on its own platform only, a platform wheel only its own (ABI, platform); an
    aarch64 wheel never serves an armv7l target.  (``wheel_serves`` in
    sql/create_piwheels.sql.)"""
    abi, platform = target
    platforms = _platforms(py_tag, wheel_abi, wheel_platform)
    if "any" not in platforms and platform not in platforms:
        return False
    return wheel_abi in ("none", abi) or (
        wheel_abi == "abi3" and abi_version(py_tag) <= abi_version(abi))


#: Unsuccessful attempts on one target that settle a release as failed there: the
#: first is only a claim (any peer can send one), so it is retried once.  The
#: literal 2 in ``needs_build`` (sql/create_piwheels.sql) is this number.
FAILURES_THAT_COUNT = 2


def build_serves(build_target: tuple[str, str], status: str,
                 wheel_tags: Iterable[tuple[str, str, str]], target: tuple[str, str]) -> bool:
    """Whether an attempt on *build_target* made a wheel for *target* (so *target*
    needs no build): it succeeded on *target*, or its wheels (*wheel_tags*: each
    file's (py_tag, abi_tag, platform_tag)) include one that serves *target*."""
    if status != "success":
        return False
    return tuple(build_target) == tuple(target) or any(
        wheel_serves(py, wabi, wplat, target) for py, wabi, wplat in wheel_tags)


def failures_count(statuses: Iterable[str]) -> bool:
    """Whether the unsuccessful ones among one target's attempt *statuses* settle it
    (the count alone; :func:`failures_settle` adds the images)."""
    return sum(status != "success" for status in statuses) >= FAILURES_THAT_COUNT


class Attempt(NamedTuple):
    """One attempt as the queue rule sees it: its build target (abi, platform),
    status, its wheels' (py_tag, abi_tag, platform_tag), and for a failure its
    cause, image and start."""

    target: tuple[str, str]
    status: str
    wheel_tags: Iterable[tuple[str, str, str]] = ()
    cause: Optional[str] = None
    image: Optional[str] = None
    started: Optional[datetime] = None


def deterministic(cause: Optional[str]) -> bool:
    """Whether *cause* fails the same way again on the same image
    (``cause_deterministic`` in sql/create_piwheels.sql)."""
    return cause in CAUSES and CAUSES[cause].deterministic


def fixable_by_image(cause: Optional[str]) -> bool:
    """Whether a builder with something more installed may not fail for *cause*
    (``cause_fixable_by_image`` in sql/create_piwheels.sql)."""
    return cause in CAUSES and CAUSES[cause].fixable_by_image


def reopened(failure: Attempt, images: Mapping[str, datetime]) -> bool:
    """Whether *failure* no longer counts: its cause is one a new image may fix,
    and the target has an image first seen after it started (not its own)."""
    return fixable_by_image(failure.cause) and failure.started is not None and any(
        image != failure.image and seen > failure.started for image, seen in images.items())


def alone(failure: Attempt, images: Mapping[str, datetime]) -> bool:
    """Whether a deterministic *failure* had no other image to retry it: none of
    the target's images, as new as its own or newer, had been seen when it started
    (an older image is taken for one the farm has left behind)."""
    if failure.started is None:
        return True  # (no start known: nothing can be shown to have been there)
    own = images.get(failure.image, failure.started)
    return not any(image != failure.image and own <= seen <= failure.started
                   for image, seen in images.items())


def failures_settle(failures: Iterable[Attempt], images: Mapping[str, datetime]) -> bool:
    """Whether one target's unsuccessful attempts settle the release there, given the
    target's *images* (image -> first seen).  A failure a newer image may fix does
    not count; of the rest, two settle it (a claim and its retry), and so does
    one deterministic failure on an image that nothing else could retry."""
    counting = [f for f in failures if not reopened(f, images)]
    return len(counting) >= FAILURES_THAT_COUNT or any(
        f.image is not None and deterministic(f.cause) and alone(f, images) for f in counting)


def needs_build(attempts: Iterable[tuple], target: tuple[str, str],
                images: Mapping[str, datetime] = {},
                skipped: Iterable[tuple[str, str]] = ()) -> bool:
    """Whether a release with these *attempts* (:class:`Attempt` fields: build
    target, status, wheel tags, and optionally cause, image, started) and
    ``build_skips`` rows for the targets *skipped* still needs a build for
    *target*, whose builders' *images* were first seen when they say: it is not
    skipped there, no wheel serves it and its failures there do not settle it
    (the build queue's rule, ``needs_build`` in sql/create_piwheels.sql)."""
    target = tuple(target)
    if target in {tuple(t) for t in skipped}:
        return False
    attempts = [Attempt(*attempt) for attempt in attempts]
    if any(build_serves(a.target, a.status, a.wheel_tags, target) for a in attempts):
        return False
    return not failures_settle(
        [a for a in attempts if tuple(a.target) == target and a.status != "success"], images)


def failed_images(attempts: Iterable[tuple], target: tuple[str, str]) -> set[str]:
    """The images never to offer the release to for *target*: those it failed on
    for a deterministic cause (even where a newer image re-opened it: the old
    one would fail the same way)."""
    return {a.image for a in (Attempt(*attempt) for attempt in attempts)
            if tuple(a.target) == tuple(target) and a.status != "success"
            and a.image is not None and deterministic(a.cause)}


def build_abi_of(tag: Tag) -> Optional[str]:
    """The build ABI a wheel's tag implies (None: it does not say): its own
    concrete ABI, or for an ``abi3``/``none`` wheel of one CPython that Python."""
    if build_abi_problem(tag.abi) is None:
        return tag.abi
    if tag.interpreter.startswith("cp") and build_abi_problem(tag.interpreter) is None:
        return tag.interpreter
    return None
