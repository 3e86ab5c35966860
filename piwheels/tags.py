"""Wheel tags and build ABIs: what a valid tag is, and which ABIs a wheel serves.

Pure rules, no I/O.  The slave driver checks a HELLO's tags with them, the
build queue, piw-import and the admin service check an ABI before it is
stored, and the project pages decide each version × ABI cell with them.  The
database decides the build queue with the same rule in SQL
(``abi_python_version`` and ``needs_build`` in sql/create_piwheels.sql);
``tests/test_tags.py`` runs both over one table of cases and asserts they
agree.  A failed attempt does not settle a release until it is retried
(:data:`FAILURES_THAT_COUNT`), unless it failed for a deterministic cause on
an image no other could retry; and a failure a new image may fix stops
counting once the ABI has a newer image (:func:`failures_settle`).

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
from typing import Iterable, Mapping, NamedTuple, Optional

from packaging.tags import Tag

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


def wheel_serves(py_tag: str, wheel_abi: str, abi: str) -> bool:
    """Whether a wheel tagged *py_tag*-*wheel_abi* serves builds for *abi* besides
    its own: a pure (``none``) wheel serves every ABI, an ``abi3`` wheel every ABI
    of its Python version or newer."""
    return wheel_abi == "none" or (
        wheel_abi == "abi3" and abi_version(py_tag) <= abi_version(abi))


#: Unsuccessful attempts on one ABI that settle a release as failed there: the
#: first is only a claim (any peer can send one), so it is retried once.  The
#: literal 2 in ``needs_build`` (sql/create_piwheels.sql) is this number.
FAILURES_THAT_COUNT = 2


def build_serves(build_abi: str, status: str, wheel_tags: Iterable[tuple[str, str]],
                 abi: str) -> bool:
    """Whether an attempt on *build_abi* made a wheel for *abi* (so *abi* needs no
    build): it succeeded on *abi*, or its wheels (*wheel_tags*: each file's
    (py_tag, abi_tag)) include one that serves *abi*."""
    if status != "success":
        return False
    return build_abi == abi or any(wheel_serves(py, wabi, abi) for py, wabi in wheel_tags)


def failures_count(statuses: Iterable[str]) -> bool:
    """Whether the unsuccessful ones among one ABI's attempt *statuses* settle it
    (the count alone; :func:`failures_settle` adds the images)."""
    return sum(status != "success" for status in statuses) >= FAILURES_THAT_COUNT


class Attempt(NamedTuple):
    """One attempt as the queue rule sees it: its build ABI, status, its wheels'
    (py_tag, abi_tag), and for a failure its cause, image and start."""

    abi: str
    status: str
    wheel_tags: Iterable[tuple[str, str]] = ()
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
    and the ABI has an image first seen after it started (not its own)."""
    return fixable_by_image(failure.cause) and failure.started is not None and any(
        image != failure.image and seen > failure.started for image, seen in images.items())


def alone(failure: Attempt, images: Mapping[str, datetime]) -> bool:
    """Whether a deterministic *failure* had no other image to retry it: none of
    the ABI's images, as new as its own or newer, had been seen when it started
    (an older image is taken for one the farm has left behind)."""
    if failure.started is None:
        return True  # (no start known: nothing can be shown to have been there)
    own = images.get(failure.image, failure.started)
    return not any(image != failure.image and own <= seen <= failure.started
                   for image, seen in images.items())


def failures_settle(failures: Iterable[Attempt], images: Mapping[str, datetime]) -> bool:
    """Whether one ABI's unsuccessful attempts settle the release there, given the
    ABI's *images* (image -> first seen).  A failure a newer image may fix does
    not count; of the rest, two settle it (a claim and its retry), and so does
    one deterministic failure on an image that nothing else could retry."""
    counting = [f for f in failures if not reopened(f, images)]
    return len(counting) >= FAILURES_THAT_COUNT or any(
        f.image is not None and deterministic(f.cause) and alone(f, images) for f in counting)


def needs_build(attempts: Iterable[tuple], abi: str,
                images: Mapping[str, datetime] = {}, skipped: Iterable[str] = ()) -> bool:
    """Whether a release with these *attempts* (:class:`Attempt` fields: build ABI,
    status, wheel tags, and optionally cause, image, started) and ``build_skips``
    rows for the ABIs *skipped* still needs a build for *abi*, whose builders'
    *images* were first seen when they say: it is not skipped there, no wheel
    serves it and its failures do not settle it (the build queue's rule,
    ``needs_build`` in sql/create_piwheels.sql)."""
    if abi in set(skipped):
        return False
    attempts = [Attempt(*attempt) for attempt in attempts]
    if any(build_serves(a.abi, a.status, a.wheel_tags, abi) for a in attempts):
        return False
    return not failures_settle(
        [a for a in attempts if a.abi == abi and a.status != "success"], images)


def failed_images(attempts: Iterable[tuple], abi: str) -> set[str]:
    """The images never to offer the release to for *abi*: those it failed on
    for a deterministic cause (even where a newer image re-opened it: the old
    one would fail the same way)."""
    return {a.image for a in (Attempt(*attempt) for attempt in attempts)
            if a.abi == abi and a.status != "success" and a.image is not None
            and deterministic(a.cause)}


def build_abi_of(tag: Tag) -> Optional[str]:
    """The build ABI a wheel's tag implies (None: it does not say): its own
    concrete ABI, or for an ``abi3``/``none`` wheel of one CPython that Python."""
    if build_abi_problem(tag.abi) is None:
        return tag.abi
    if tag.interpreter.startswith("cp") and build_abi_problem(tag.interpreter) is None:
        return tag.interpreter
    return None
