"""In-process records passed between the slave, the master's tasks and the data layer."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from datetime import datetime, timedelta
from typing import Optional

from .project_status import ACTIVE, ProjectStatus, combine
from .protocols import WheelFacts
from .smoke import SmokeResult
from .tags import Target

BUILD_STATUSES = ("success", "failed", "rejected")
DEPENDENCY_TOOLS = ("apt", "pip")


@dataclass(frozen=True)
class BuildRecord:
    """One build attempt: who built what for which target, how it went, and its wheels."""

    package: str
    version: str
    abi_tag: str
    platform_tag: str
    slave_label: str
    started: datetime
    duration: timedelta
    status: str
    log: str
    reason: Optional[str] = None
    #: the verified wheels of a successful build (recorded as they are, see
    #: :mod:`piwheels.db_files`)
    files: tuple[WheelFacts, ...] = ()
    #: the identity answerable for the attempt (None: the slave's label)
    builder: Optional[str] = None
    #: the digest of the builder's image (None: not known)
    image: Optional[str] = None
    #: an unsuccessful attempt's cause (a key of :data:`piwheels.diagnosis.CAUSES`),
    #: its one line of detail, and the Debian package that would fix it, if known
    cause: Optional[str] = None
    cause_detail: Optional[str] = None
    cause_package: Optional[str] = None
    #: the builder's smoke tests of its wheels (none: not tested)
    smoke: tuple[SmokeResult, ...] = ()
    #: the builder's OS release ("Debian 12"; None: not known)
    os_release: Optional[str] = None

    @property
    def target(self) -> Target:
        return Target(self.abi_tag, self.platform_tag)

    def __post_init__(self) -> None:
        if self.status not in BUILD_STATUSES:
            raise ValueError(f"build status must be one of {BUILD_STATUSES}, not {self.status!r}")
        if self.status != "success" and self.files:
            raise ValueError("only a successful build has files")


#: the facts of a wheel that are not kept in its ``files`` row: the METADATA
#: bytes (served as its ``.metadata`` file) and the dependency lists (kept by tool)
NOT_IN_ROW = frozenset({"metadata", "requires_dist", "apt_dependencies"})

FileData = make_dataclass(
    "FileData",
    [(f.name, f.type) for f in fields(WheelFacts) if f.name not in NOT_IN_ROW]
    + [("published", "datetime"), ("dependencies", "dict[str, tuple[str, ...]]"),
       # its builder's smoke test (None: not tested)
       ("smoke", "Optional[SmokeResult]", field(default=None))],
    frozen=True, namespace={
        "__module__": __name__,
        "__doc__": """A published file as the project pages read it back: the facts its
        row keeps (the fields of :class:`~piwheels.protocols.WheelFacts`, derived
        from them so each is declared once), when it was published, its
        dependencies by tool (:mod:`piwheels.db_files` maps the rows) and its
        smoke test.""",
    })


@dataclass(frozen=True)
class BuildData:
    build_id: int
    abi_tag: str
    platform_tag: str
    slave_label: str
    builder: str
    started: datetime
    duration: timedelta
    status: str
    reason: Optional[str]
    files: tuple["FileData", ...]
    #: why it failed (see :class:`BuildRecord`)
    cause: Optional[str] = None
    cause_detail: Optional[str] = None
    cause_package: Optional[str] = None
    #: the builder image it ran on (None: not known)
    image: Optional[str] = None
    #: the OS release its builder ran (None: not known)
    os_release: Optional[str] = None

    @property
    def target(self) -> Target:
        return Target(self.abi_tag, self.platform_tag)


@dataclass(frozen=True)
class VersionData:
    version: str
    released: Optional[datetime]  # None: upstream did not say when
    has_sdist: bool
    yanked: bool
    yank_reason: Optional[str]
    skip_reason: Optional[str]
    builds: tuple[BuildData, ...]
    #: why the build policy leaves it out (None: it does not)
    policy_reason: Optional[str] = None
    #: the targets it is not built for, and why: {target: (cause, detail)} (build_skips)
    skips: dict[Target, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectData:
    """Everything the database knows of one project, newest version first."""

    package: str
    description: str
    skip_reason: Optional[str]
    names: tuple[str, ...]
    versions: tuple[VersionData, ...]
    #: PEP 792: upstream's status and the operator's (None: none set)
    upstream_status: str = ACTIVE
    upstream_status_reason: Optional[str] = None
    operator_status: Optional[str] = None
    operator_status_reason: Optional[str] = None
    #: the farm's builder images of each target: {target: {image: first seen}}
    images: dict[Target, dict[str, datetime]] = field(default_factory=dict, compare=False)

    @property
    def status(self) -> ProjectStatus:
        """The status in force (the stricter of upstream's and the operator's)."""
        return combine(self.upstream_status, self.upstream_status_reason,
                       self.operator_status, self.operator_status_reason)
