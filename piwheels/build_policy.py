"""Which releases a farm builds: the operator's build policy, declared once.

A policy is written as a SPEC: ``all``, ``newest:N``, ``since:YYYY-MM-DD`` or
``versions:V1,V2,...``; pre-releases are left out unless switched on, and
yanked releases are never built.  A farm has one policy and a project may have
its own.  :func:`parse_policy` validates a SPEC where it enters (configuration,
control request, admin tool); :func:`policy_reasons` is the rule itself, the
one place that decides which releases a policy leaves out.  The data layer
stores its verdict per release (``versions.policy_reason``), so the build
queue's SQL only asks whether a reason is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timezone
from typing import Iterable, Optional

from packaging.version import InvalidVersion as _InvalidVersion
from packaging.version import Version

from . import limits
from .errors import InvalidPolicy, InvalidVersion
from .names import normal_version

#: The forms a SPEC takes, for error messages and help texts.
POLICY_FORMS = "all, newest:N, since:YYYY-MM-DD or versions:V1,V2,..."
#: The reason stored for a pre-release the policy leaves out.
PRERELEASE_REASON = "pre-release"
#: The longest reason stored (the ``versions.policy_reason`` column, tested to agree).
MAX_REASON_LENGTH = limits.POLICY_REASON
#: The longest SPEC accepted (a versions: list, mostly).
MAX_SPEC_LENGTH = 10_000


@dataclass(frozen=True)
class BuildPolicy:
    """One parsed SPEC: *kind* and the value that goes with it."""

    kind: str  # all | newest | since | versions
    newest: int = 0
    since: Optional[date] = None
    versions: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """The SPEC this policy is written as (what is stored and shown)."""
        if self.kind == "newest":
            return f"newest:{self.newest}"
        if self.kind == "since":
            return f"since:{self.since.isoformat()}"
        if self.kind == "versions":
            return "versions:" + ",".join(self.versions)
        return "all"

    @property
    def weighs_siblings(self) -> bool:
        """Whether a release's verdict depends on the project's other releases (only
        newest:N's does); otherwise a new release is weighed on its own."""
        return self.kind == "newest"

    def describe(self) -> str:
        """What it builds, in words: "the newest 1 release"."""
        if self.kind == "newest":
            return f"the newest {self.newest} release{'s' if self.newest != 1 else ''}"
        if self.kind == "since":
            return f"releases since {self.since.isoformat()}"
        if self.kind == "versions":
            return "only version" + ("s " if len(self.versions) > 1 else " ") + \
                ", ".join(self.versions)
        return "every release"

    def __str__(self) -> str:
        return self.spec


ALL = BuildPolicy("all")


def parse_policy(spec: str) -> BuildPolicy:
    """The policy *spec* names; raises :class:`InvalidPolicy` with a one-line reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidPolicy(f"empty build policy; use {POLICY_FORMS}")
    if len(spec) > MAX_SPEC_LENGTH:
        raise InvalidPolicy(f"build policy longer than {MAX_SPEC_LENGTH} characters")
    kind, sep, value = spec.strip().partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if kind == "all" and not sep:
        return ALL
    if kind == "newest" and sep:
        try:
            count = int(value)
        except ValueError:
            raise InvalidPolicy(f"build policy {spec!r}: N must be a whole number") from None
        if count < 1:
            raise InvalidPolicy(f"build policy {spec!r}: N must be at least 1")
        return BuildPolicy("newest", newest=count)
    if kind == "since" and sep:
        try:
            since = date.fromisoformat(value)
        except ValueError:
            raise InvalidPolicy(
                f"build policy {spec!r}: {value!r} is not a date (YYYY-MM-DD)") from None
        return BuildPolicy("since", since=since)
    if kind == "versions" and sep:
        versions = []
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                versions.append(normal_version(item))
            except InvalidVersion:
                raise InvalidPolicy(
                    f"build policy {spec!r}: {item!r} is not a valid version") from None
        if not versions:
            raise InvalidPolicy(f"build policy {spec!r} names no versions")
        return BuildPolicy("versions", versions=tuple(dict.fromkeys(versions)))
    raise InvalidPolicy(f"unknown build policy {spec!r}; use {POLICY_FORMS}")


@dataclass(frozen=True)
class Release:
    """What the rule needs to know of one release."""

    version: str
    released: Optional[datetime]  # None: upload time unknown
    yanked: bool = False


@lru_cache(maxsize=65536)
def _parsed(version: str) -> Optional[Version]:
    try:
        return Version(version)
    except _InvalidVersion:
        return None


def policy_reasons(policy: BuildPolicy, prereleases: bool, releases: Iterable[Release],
                   whose: str = "farm") -> dict[str, Optional[str]]:
    """{version: why *policy* leaves it out, or None} for every one of a project's releases.

    Yanked releases get no reason here (they are never built anyway, and say
    so themselves) and do not count among the newest.  An unparseable version
    is never among the newest.  Explicitly listed versions are built even when
    they are pre-releases.
    """
    releases = list(releases)
    says = f"{whose} policy builds {policy.describe()}"[:MAX_REASON_LENGTH]
    reasons: dict[str, Optional[str]] = {}
    listed = set(policy.versions)
    since = None if policy.since is None else \
        datetime.combine(policy.since, datetime.min.time(), tzinfo=timezone.utc)
    candidates: list[tuple[Version, str]] = []
    for release in releases:
        version = release.version
        if release.yanked:
            reasons[version] = None
            continue
        if policy.kind == "versions":
            reasons[version] = None if version in listed else says
            continue
        parsed = _parsed(version)
        if not prereleases and parsed is not None and parsed.is_prerelease:
            reasons[version] = PRERELEASE_REASON
        elif policy.kind == "since":
            known = release.released is not None
            reasons[version] = None if known and release.released >= since else says
        elif policy.kind == "newest":
            reasons[version] = says
            if parsed is not None:
                candidates.append((parsed, version))
        else:
            reasons[version] = None
    candidates.sort(reverse=True)
    for _, version in candidates[:policy.newest]:
        reasons[version] = None
    return reasons

