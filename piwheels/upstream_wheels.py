"""Whether a builder need build a release at all: Requires-Python and upstream's wheels.

Pure rules, no I/O.  A builder is described by what its HELLO says: its
interpreter and ABI tags, its full Python version and the platform tags its
interpreter accepts, in :func:`packaging.tags.sys_tags` order.  From those
:func:`accepted_tags` rebuilds the set of tags pip on that builder would
install, with :mod:`packaging.tags` (``cpython_tags``/``generic_tags`` and
``compatible_tags``), never by parsing tag strings by hand.  A release is
skipped for a builder (:func:`skip_verdict`) when its Requires-Python
excludes the builder's Python, or when upstream already serves a wheel whose
tags meet that set: pure, ``abi3`` for this or an older CPython, or the exact
ABI on a platform the builder accepts (manylinux and musllinux included, as
far as its C library accepts them).

The slave driver applies the verdict when it is about to hand a release to
a slave (:mod:`piwheels.master.skips`): the slave's own Python version and
platforms decide, the slave is given the next release at once, and the
verdict is recorded for the release and ABI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

#: build_skips causes (the ``cause`` column); the detail says which specifier or file
REQUIRES_PYTHON = "requires-python"
UPSTREAM_WHEEL = "upstream-wheel"
SKIP_CAUSES = (REQUIRES_PYTHON, UPSTREAM_WHEEL)
#: what a page shows for each skip cause, beside its detail
SKIP_LABELS = {REQUIRES_PYTHON: "Requires-Python excludes it",
               UPSTREAM_WHEEL: "upstream serves a wheel"}


@dataclass(frozen=True)
class Builder:
    """What a builder's interpreter is, as its HELLO reports it."""

    python_tag: str
    abi_tag: str
    python_version: str
    #: the platform tags its interpreter accepts, most specific first
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class Skip:
    """Why a release is not built for a builder's ABI (a ``build_skips`` row)."""

    cause: str
    detail: str


def _major_minor(python_version: str) -> Optional[tuple[int, int]]:
    try:
        release = Version(python_version).release
    except InvalidVersion:
        return None
    return (release[0], release[1]) if len(release) >= 2 else None


def accepted_tags(builder: Builder) -> frozenset[Tag]:
    """Every tag the builder's interpreter installs (empty: HELLO said too little).

    CPython gets :func:`packaging.tags.cpython_tags` (its ABI, ``abi3`` down to
    3.2, ``none``); any other interpreter :func:`~packaging.tags.generic_tags`;
    both :func:`~packaging.tags.compatible_tags` (``py3*``, ``-none-any``).
    """
    version = _major_minor(builder.python_version)
    if version is None or not builder.platforms:
        return frozenset()
    platforms = list(builder.platforms)
    if builder.python_tag.startswith("cp"):
        own = cpython_tags(version, abis=[builder.abi_tag], platforms=platforms)
    else:
        own = generic_tags(builder.python_tag, abis=[builder.abi_tag, "none"],
                           platforms=platforms)
    return frozenset(own) | frozenset(
        compatible_tags(version, builder.python_tag, platforms=platforms))


def wheel_tags(filename: str) -> frozenset[Tag]:
    """A wheel filename's tags (empty: not a valid wheel filename)."""
    try:
        return parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return frozenset()


def installable_wheel(filenames: Iterable[str], accepted: frozenset[Tag]) -> Optional[str]:
    """The first of *filenames* (sorted) a builder accepting *accepted* can install."""
    for filename in sorted(filenames):
        if wheel_tags(filename) & accepted:
            return filename
    return None


def requires_python_excludes(spec: Optional[str], python_version: str) -> bool:
    """Whether Requires-Python *spec* leaves out *python_version*, read as pip reads
    it: the interpreter as its major.minor.micro (3.12.0rc1 is 3.12.0), and an
    invalid specifier excluding nothing."""
    if not spec or not spec.strip():
        return False
    try:
        release = ".".join(str(n) for n in Version(python_version).release[:3])
        return not SpecifierSet(spec).contains(release, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


def skip_verdict(builder: Builder, accepted: frozenset[Tag], requires_python: Optional[str],
                 upstream: Sequence[str]) -> Optional[Skip]:
    """Why a release with *requires_python* whose upstream wheels are *upstream*
    need not be built on *builder* (None: it must be).  Requires-Python first:
    a release the builder's Python cannot install is never built there."""
    if requires_python_excludes(requires_python, builder.python_version):
        return Skip(REQUIRES_PYTHON,
                    f"Requires-Python {requires_python.strip()} excludes Python "
                    f"{builder.python_version}")
    found = installable_wheel(upstream, accepted)
    if found is not None:
        return Skip(UPSTREAM_WHEEL, f"upstream serves {found}")
    return None
