"""Validating and normalising project names and release versions (with packaging)."""

from __future__ import annotations

from typing import Optional

from packaging.utils import InvalidName as _PackagingInvalidName
from packaging.utils import canonicalize_name as _canonicalize
from packaging.version import InvalidVersion as _PackagingInvalidVersion
from packaging.version import Version

from .errors import InvalidName, InvalidVersion

#: The longest name or version the database accepts.
MAX_NAME_LENGTH = 200
MAX_VERSION_LENGTH = 200
#: The characters that make a name or version a shell-style pattern (no valid name
#: or version has them).
WILDCARDS = "*?["


def canonical_name(name: str) -> str:
    """The PEP 503 form of *name*; raises :class:`InvalidName` for a bad one."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"invalid project name {name!r}: must be 1 to {MAX_NAME_LENGTH} characters")
    try:
        return _canonicalize(name, validate=True)
    except _PackagingInvalidName:
        raise InvalidName(f"invalid project name {name!r}") from None


def display_name(name: str) -> str:
    """*name* itself once it is known to be valid (the spelling upstream uses)."""
    canonical_name(name)
    return name


def normal_version(version: str) -> str:
    """The normalised form of *version*; raises :class:`InvalidVersion` for a bad one."""
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION_LENGTH:
        raise InvalidVersion(
            f"invalid version {version!r}: must be 1 to {MAX_VERSION_LENGTH} characters"
        )
    try:
        return str(Version(version))
    except _PackagingInvalidVersion:
        raise InvalidVersion(f"invalid version {version!r}") from None


def version_key(version: str) -> Version:
    """A sort key that orders versions as pip does."""
    return Version(version)


def is_pattern(text: Optional[str]) -> bool:
    """Whether *text* names many (a wildcard pattern, or a comma-separated version
    list) rather than one project or release."""
    return text is not None and (any(c in text for c in WILDCARDS) or "," in text)
