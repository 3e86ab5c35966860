"""Wheel tags and build ABIs: what a valid tag is, and which ABIs a wheel serves.

Pure rules, no I/O.  The slave driver checks a HELLO's tags with them, the
build queue, piw-import and the admin service check an ABI before it is
stored, and the project pages decide each version × ABI cell with them.  The
database decides the build queue with the same rule in SQL
(``abi_python_version`` and ``needs_build`` in sql/create_piwheels.sql);
``tests/test_tags.py`` runs both over one table of cases and asserts they
agree.  A failed attempt does not settle a release until it is retried
(:data:`FAILURES_THAT_COUNT`).

Tag syntax follows :mod:`packaging.tags`: a tag is what
:class:`packaging.tags.Tag` makes of it unchanged (lower-case), one tag and not
a compressed set (no ``.``), and made of letters, digits and ``_``.  The farm
adds its own rule for an ABI it builds for: a concrete ABI with a Python
version (``cp311``, ``cp313t``, ``pypy310_pp73``), never ``none`` or ``abi3``
(those are what a wheel may say, not what a builder runs).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from packaging.tags import Tag

from . import limits
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
    """Whether the unsuccessful ones among one ABI's attempt *statuses* settle it."""
    return sum(status != "success" for status in statuses) >= FAILURES_THAT_COUNT


def needs_build(attempts: Iterable[tuple[str, str, Iterable[tuple[str, str]]]],
                abi: str, skipped: Iterable[str] = ()) -> bool:
    """Whether a release with these *attempts* (build ABI, status, wheel tags) and
    ``build_skips`` rows for the ABIs *skipped* still needs a build for *abi*: it
    is not skipped there, no wheel serves it and its failures do not count yet
    (the build queue's rule, ``needs_build`` in sql/create_piwheels.sql)."""
    if abi in set(skipped):
        return False
    attempts = list(attempts)
    if any(build_serves(build_abi, status, tags, abi) for build_abi, status, tags in attempts):
        return False
    return not failures_count(status for build_abi, status, _ in attempts if build_abi == abi)


def build_abi_of(tag: Tag) -> Optional[str]:
    """The build ABI a wheel's tag implies (None: it does not say): its own
    concrete ABI, or for an ``abi3``/``none`` wheel of one CPython that Python."""
    if build_abi_problem(tag.abi) is None:
        return tag.abi
    if tag.interpreter.startswith("cp") and build_abi_problem(tag.interpreter) is None:
        return tag.interpreter
    return None
