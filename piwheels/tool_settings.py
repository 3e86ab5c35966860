"""The admin tools' configuration records (piw-add, piw-remove, piw-rebuild,
piw-import, piw-control): how each reaches the master, and the checked
arguments of the one request it makes.  The rules and record machinery they
share with the daemons' records are :mod:`piwheels.settings`'.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from voluptuous import Invalid

from . import protocols
from .build_policy import parse_policy
from .errors import ConfigError
from .names import is_pattern
from .project_status import check_status
from .settings import CheckedRecord, LogSettings, Record, check_address, require
from .tags import target_problem


# --- the admin tools -------------------------------------------------------------------
#
# A tool's record holds its options and the arguments of the one request it
# makes.  An argument that is no option (PACKAGE, --skip, ...) names its flag
# and its protocol field type, so its width comes from piwheels.limits through
# the protocol, as the master will check it, and is refused here first, in
# one line naming the flag.

#: The options of every admin tool that talks to the master.
CLIENT_OPTIONS = ["control_address", "request_timeout_s", "verbose", "quiet", "log_file"]


def argument(flag: str, kind: Optional[Callable[[Any], Any]] = None,
             default: Any = dataclasses.MISSING) -> Any:
    """A record field for a command-line argument *flag*, checked with *kind*."""
    return dataclasses.field(default=default, metadata={"flag": flag, "kind": kind})


def _shown(value: Any) -> str:
    """*value* for a one-line message: a long text clipped, with its length."""
    text = repr(value)
    if len(text) <= 40 or not isinstance(value, str):
        return text[:40]
    return f"{text[:30]}... ({len(value)} characters)"


@dataclass(frozen=True)
class ClientSettings(CheckedRecord):
    """How an admin tool reaches the master's control socket."""

    control_address: str
    request_timeout_s: float

    def check(self) -> None:
        check_address("control_address", self.control_address, bind=False)


@dataclass(frozen=True)
class _ToolConfig(CheckedRecord):
    """An admin tool's record: how it reaches the master, and arguments
    declared with :func:`argument`, each checked by its kind."""

    client: ClientSettings

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            kind, value = item.metadata.get("kind"), getattr(self, item.name)
            if kind is None or value is None:
                continue
            for one in value if isinstance(value, tuple) else (value,):
                try:
                    kind(one)
                except Invalid as exc:
                    raise ConfigError(f"{item.metadata['flag']} {_shown(one)}: {exc.msg}") from None
        super().__post_init__()

    @classmethod
    def from_options(cls: type[Record], options: argparse.Namespace,
                     **derived: Any) -> Record:
        derived.setdefault("client", ClientSettings.from_options(options))
        return super().from_options(options, **derived)


@dataclass(frozen=True)
class _TargetConfig(_ToolConfig):
    """What piw-add and piw-remove act on: a project or a release of it (or, by
    a pattern or a version list, several), and why it is never to be built."""

    package: str = argument("PACKAGE", protocols.Name)
    version: Optional[str] = argument("VERSION", protocols.Version, None)
    skip: Optional[str] = argument("--skip", protocols.SkipReason, None)
    yes: bool = False

    @property
    def bulk(self) -> bool:
        """Whether PACKAGE or VERSION names several (a pattern or a version list)."""
        return is_pattern(self.package) or is_pattern(self.version)

    def check(self) -> None:
        require(self.skip is None or bool(self.skip.strip()), "--skip needs a REASON")


@dataclass(frozen=True)
class AddConfig(_TargetConfig):
    """piw-add: a project or release to add, or how it is to be built."""

    unskip: bool = False
    #: the reason for --yank ("" when none was given); None: not yanked
    yank: Optional[str] = argument("--yank", protocols.Reason, None)
    unyank: bool = False
    alias: Optional[str] = argument("--alias", protocols.Name, None)
    status: Optional[str] = argument("--status", None, None)
    status_reason: Optional[str] = argument("--status-reason", protocols.Reason, None)
    log: LogSettings = LogSettings()

    def check(self) -> None:
        super().check()
        require(self.skip is None or not self.unskip, "--skip and --unskip exclude each other")
        require(self.yank is None or not self.unyank, "--yank and --unyank exclude each other")
        if self.status is not None:
            check_status(self.status)
            require(not self.version, "--status is for a whole project; give no VERSION")
        require(self.status_reason is None or self.status is not None,
                "--status-reason goes with --status")
        require(bool(self.version) or (self.yank is None and not self.unyank),
                "--yank and --unyank need a VERSION")
        require(not self.bulk or ((self.skip is not None or self.unskip) and self.yank is None
                                  and not self.unyank and not self.alias
                                  and self.status is None),
                "a pattern or version list goes with --skip or --unskip only")


@dataclass(frozen=True)
class RemoveConfig(_TargetConfig):
    """piw-remove: what to take out of the farm (--builds: only its builds)."""

    builds: bool = False
    log: LogSettings = LogSettings()


@dataclass(frozen=True)
class RebuildConfig(_ToolConfig):
    """piw-rebuild: which pages to rewrite, and whether to follow the writing."""

    status_address: str
    part: str = argument("PART", protocols.one_of(*protocols.REBUILD_PARTS))
    package: Optional[str] = argument("PKG", protocols.Name, None)
    no_wait: bool = False
    log: LogSettings = LogSettings()

    def check(self) -> None:
        check_address("status_address", self.status_address, bind=False)
        require(self.package is None or self.part == "project",
                f"PKG goes with 'project' only, not {self.part!r}")


@dataclass(frozen=True)
class ImportConfig(_ToolConfig):
    """piw-import: the wheels to import, and what to record them under."""

    wheels: tuple[str, ...] = argument("WHEEL", protocols.FilePath)
    abi: Optional[str] = argument("--abi", protocols.Tag, None)
    platform: Optional[str] = argument("--platform", protocols.Platform, None)
    label: str = argument("--label", protocols.Label, "")
    log: LogSettings = LogSettings()


#: piw-control's actions and the control request each sends.
CONTROL_ACTIONS = {
    "pause": "PAUSE",
    "resume": "RESUME",
    "reconcile": "RECONCILE",
    "add-target": "TARGET",
    "retire-target": "TARGET",
    "min-free-space": "MIN_FREE_SPACE",
    "build-policy": "POLICY",
    "build-prereleases": "POLICY",
    "failures": "FAILURES",
}


@dataclass(frozen=True)
class ControlConfig(_ToolConfig):
    """piw-control: one action, its VALUE (and PLATFORM), and the project it is for."""

    action: str = argument("ACTION", protocols.one_of(*CONTROL_ACTIONS))
    value: Optional[str] = None
    platform: Optional[str] = argument("PLATFORM", protocols.Platform, None)
    project: Optional[str] = argument("--project", protocols.Name, None)
    os_release: Optional[str] = argument("--os-release", protocols.OsRelease, None)
    log: LogSettings = LogSettings()

    @property
    def mib(self) -> int:
        """min-free-space's VALUE."""
        return int(self.value)  # type: ignore[arg-type]

    def check(self) -> None:
        action, value = self.action, self.value
        require(not self.project or action.startswith("build-") or action == "failures",
                "--project goes with build-policy, build-prereleases and failures only")
        require(self.platform is None or action.endswith("-target"),
                "PLATFORM goes with add-target and retire-target only")
        require(self.os_release is None or action == "add-target",
                "--os-release goes with add-target only")
        if action == "min-free-space":
            require(value is not None and value.isdigit(),
                    "min-free-space needs MIB, a whole number of MiB (0 or more)")
            require(self.mib <= protocols.MAX_FREE_SPACE_MIB,
                    f"min-free-space MIB must be at most {protocols.MAX_FREE_SPACE_MIB} "
                    "(its byte count must fit a 64-bit integer)")
        elif action == "build-policy":
            if value not in (None, "farm"):
                parse_policy(value)  # a bad SPEC: one line, never sent
        elif action == "failures":
            require(value is None or (value.isdigit()
                                      and 0 < int(value) <= protocols.MAX_FAILURES_LISTED),
                    f"failures takes how many to list, 1 to {protocols.MAX_FAILURES_LISTED}")
        elif action.endswith("-target"):
            require(bool(value) and bool(self.platform),
                    f"{action} needs ABI and PLATFORM, such as cp311 linux_aarch64")
            for what, tag in (("ABI", value), ("PLATFORM", self.platform)):
                try:
                    protocols.Tag(tag)
                except Invalid as exc:
                    raise ConfigError(f"{action} {what} {_shown(tag)}: {exc.msg}") from None
            problem = target_problem(value, self.platform)
            require(problem is None, f"{action}: {problem}")
            if self.os_release is not None:
                require(bool(self.os_release.strip()),
                        "--os-release needs a release, such as 'Debian 12'")
        elif action == "build-prereleases":
            require(value in protocols.PRERELEASE_SETTINGS,
                    f"build-prereleases takes one of {', '.join(protocols.PRERELEASE_SETTINGS)}")
        else:
            require(value is None, f"{action} takes no value")
        require(value != "farm" or bool(self.project), "'farm' goes with --project NAME")
