"""What the published index says, built from the database's records.

One context builder per page makes the PEP 691-shaped dict; the JSON output
is that dict as it is, and the HTML templates (chameleon, kept dumb) render
the same dict.  Nothing here touches the disk or the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Mapping, Optional, Sequence

from chameleon import PageTemplateLoader

from .diagnosis import CAUSES
from .platform_aliases import NO_ALIASES, PlatformAliases
from .records import FileData, ProjectData, VersionData
from .resources import templates_dir
from .smoke import FAILED, SmokeResult
from .storage import LOGS_DIR, SIMPLE_DIR, log_path
from .tags import Attempt, Target, build_serves, deterministic, failures_settle
from .upstream_wheels import SKIP_LABELS

#: The simple repository API version these pages follow (PEP 629/691/700/792).
API_VERSION = "1.4"
SIMPLE_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML_TYPE = "application/vnd.pypi.simple.v1+html"
#: How the project page labels apt dependencies: the builder's claim (it alone
#: can see which Debian packages its libraries link to), not checked by the master.
APT_SOURCE = "reported by the builder"
#: What a file whose builder ran no smoke test shows.
NOT_TESTED = "not tested"


def smoke_context(smoke: Optional[SmokeResult]) -> dict:
    """A file's smoke test for its page and JSON (the builder's claim, like the apt line)."""
    if smoke is None:
        return {"status": NOT_TESTED, "detail": None, "package": None, "source": None}
    return {"status": smoke.status, "detail": smoke.detail, "package": smoke.package,
            "source": APT_SOURCE}


@dataclass(frozen=True)
class Site:
    """Facts about the farm that every page needs."""

    name: str
    index_url: str          # where pip finds simple/ (for the install instructions)
    upstream_simple: str    # the upstream index's simple/ URL (PEP 708 tracks)
    #: wheels also published under another platform's name (--platform-alias)
    platform_aliases: PlatformAliases = NO_ALIASES


def upload_time(moment: datetime) -> str:
    """PEP 700's upload-time form: ISO 8601 in UTC with a Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def release_time(moment: Optional[datetime]) -> Optional[str]:
    """A release's upload time for the project pages (None: upstream did not say)."""
    return None if moment is None else upload_time(moment)


def project_status_context(project: ProjectData) -> dict:
    """PEP 792's ``project-status`` object: the status in force, and its reason if any."""
    status = project.status
    return {"status": status.status, **({"reason": status.reason} if status.reason else {})}


def served_files(project: ProjectData) -> list[tuple[VersionData, FileData]]:
    """The published files the farm serves: none while the project is quarantined."""
    return [] if project.status.withheld else published_files(project)


def yanked_attribute(yanked: Any) -> Optional[str]:
    """The data-yanked attribute for a PEP 691 yanked value (None: no attribute)."""
    if yanked is False:
        return None
    return "" if yanked is True else str(yanked)


def _yanked(version: VersionData) -> Any:
    if not version.yanked:
        return False
    return version.yank_reason or True


def published_files(project: ProjectData) -> list[tuple[VersionData, FileData]]:
    files = [
        (version, f)
        for version in project.versions
        for build in version.builds if build.status == "success"
        for f in build.files
    ]
    files.sort(key=lambda pair: pair[1].filename)
    return files


def simple_project_context(project: ProjectData, site: Site,
                           files: Optional[list[tuple[VersionData, FileData]]] = None) -> dict:
    """The PEP 691 (+ 700, 708) project page, as a dict (*files*: its published files,
    if the caller has them already)."""
    if files is None:
        files = served_files(project)
    with_files = {version.version for version, _ in files}
    versions = [v.version for v in reversed(project.versions) if v.version in with_files]
    return {
        "meta": {
            "api-version": API_VERSION,
            "tracks": [f"{site.upstream_simple.rstrip('/')}/{project.package}/"],
        },
        "name": project.package,
        "project-status": project_status_context(project),
        "versions": versions,
        "files": [
            {
                "filename": f.filename,
                "url": f.filename,
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "size": f.size,
                "upload-time": upload_time(f.published),
                # PEP 714: only the new key in JSON (pip 22.3-23.1 crash on the old
                # one there); the HTML template adds the old attribute itself.
                "core-metadata": {"sha256": f.metadata_sha256},
                "yanked": _yanked(version),
            }
            for version, f in files
        ],
    }


def simple_root_context(packages: Sequence[str]) -> dict:
    return {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": name} for name in packages],
    }


def project_context(project: ProjectData, targets: Sequence[Target], site: Site,
                    aliases: Optional[Mapping[str, Sequence[str]]] = None) -> dict:
    """The human project page and its JSON twin: a column per build target
    (keyed "cp311 linux_aarch64", headed "cp311 aarch64"), and for each wheel
    the target and OS release it was built on, and the platform aliases it is
    also served as (*aliases*: {file: alias names})."""
    aliases = aliases or {}
    versions = []
    apt: set[str] = set()
    status = project.status
    targets = [Target(*target) for target in targets]
    for version in project.versions:
        cells = {}
        for target in targets:
            cells[str(target)] = _cell(project, version, target)
        files = [
            {
                "filename": f.filename, "size": f.size, "sha256": f.sha256,
                "abi": f.abi_tag, "platform": f.platform_tag,
                "built_for": str(build.target), "os_release": build.os_release,
                "requires_python": f.requires_python,
                "apt_dependencies": list(f.dependencies.get("apt", ())),
                "smoke_test": smoke_context(f.smoke),
                "url": f"../../{SIMPLE_DIR}/{project.package}/{f.filename}",
                "platform_aliases": [{"filename": alias,
                             "url": f"../../{SIMPLE_DIR}/{project.package}/{alias}"}
                            for alias in aliases.get(f.filename, ())],
            }
            for build in version.builds if build.status == "success" and not status.withheld
            for f in build.files
        ]
        for f in files:
            apt.update(f["apt_dependencies"])
        versions.append({
            "version": version.version,
            "released": release_time(version.released),
            "yanked": version.yanked,
            "yank_reason": version.yank_reason,
            "skip_reason": version.skip_reason or project.skip_reason,
            "has_sdist": version.has_sdist,
            "not_built": None if files else _not_built(project, version),
            "builds": cells,
            "attempts": attempts_context(version),
            "files": files,
        })
    return {
        "package": project.package,
        "description": project.description,
        "skip_reason": project.skip_reason,
        "aliases": [name for name in project.names if name != project.package],
        "targets": [{"key": str(t), "label": t.label, "abi": t.abi_tag,
                     "platform": t.platform_tag} for t in targets],
        "versions": versions,
        "apt_dependencies": sorted(apt),
        # published wheels whose import failed on their builder (--smoke-policy warn)
        "smoke_warnings": [
            {"filename": f["filename"], "detail": f["smoke_test"]["detail"],
             "package": f["smoke_test"]["package"]}
            for version in versions for f in version["files"]
            if f["smoke_test"]["status"] == FAILED],
        # the one fact of a wheel the master cannot check (see WheelFacts)
        "apt_dependencies_source": APT_SOURCE,
        "status": {**project_status_context(project), "set_by": status.set_by},
        **install_context(project, versions, site),
        "apt_install": f"sudo apt install {' '.join(sorted(apt))}" if apt else None,
    }


def install_context(project: ProjectData, versions: list[dict], site: Site) -> dict:
    """The install line, only when the farm serves a wheel of the project (its
    simple page is a 404 otherwise); else why there is none (``not_installable``)."""
    if any(version["files"] for version in versions):
        return {"install": f"pip install --extra-index-url {site.index_url} {project.package}",
                "not_installable": None}
    status = project.status
    if status.withheld:
        why = (f"Its wheels are withheld: the project is quarantined "
               f"{'by this farm' if status.set_by == 'operator' else 'upstream'}"
               f"{f' ({status.reason})' if status.reason else ''}.")
    elif project.skip_reason:
        why = f"No wheel is built: {project.skip_reason}."
    elif not versions:
        why = "No wheel is built yet: the farm knows no release of it."
    else:
        cells = [cell for version in versions for cell in version["builds"].values()]
        if not cells:
            why = "No wheel is built yet: no builder has joined the farm."
        elif any(cell["status"] in ("pending", "retrying") for cell in cells):
            why = "No wheel is built yet: its releases are waiting in the build queue."
        elif any(cell["status"] in ("failed", "rejected") for cell in cells):
            why = ("No wheel is built: every attempt failed (each build says why and "
                   "links to its log).")
        else:
            why = "No wheel is built: no release can be built (see the reason on each)."
    return {"install": None, "not_installable": why}


def _cell(project: ProjectData, version: VersionData, target: Target) -> dict:
    """One version × target cell: built, failed (with its log), retrying (failed
    once, so tried again elsewhere), pending, skipped or yanked."""
    for build in reversed(version.builds):
        if build.status == "success" and not build.files:
            continue  # its wheel was withdrawn: upstream serves that name (see its skip)
        if build_serves(build.target, build.status,
                        [(f.py_tag, f.abi_tag, f.platform_tag) for f in build.files], target):
            return _attempt_cell(build.status, build)
    if target in version.skips:
        # not built, and costing no builder: Requires-Python, or upstream's wheel
        cause, detail = version.skips[target]
        return {"status": "skipped", "reason": detail, "cause": {
            "code": cause, "label": SKIP_LABELS.get(cause, cause), "detail": detail,
            "package": None}}
    failures = [build for build in version.builds
                if build.target == target and build.status != "success"]
    if failures and failures_settle(
            [Attempt(b.target, b.status, (), b.cause, b.image, b.started) for b in failures],
            project.images.get(target, {})):
        return _attempt_cell(failures[-1].status, failures[-1])
    skip = version.skip_reason or project.skip_reason
    if skip:
        return {"status": "skipped", "reason": skip}
    if version.yanked:
        return {"status": "yanked", "reason": version.yank_reason}
    if version.policy_reason:
        return {"status": "excluded", "reason": version.policy_reason}
    if not version.has_sdist:
        return {"status": "binary-only", "reason": "no source distribution upstream"}
    if failures:
        cell = _attempt_cell("retrying", failures[-1])
        where = "image" if failures[-1].image and deterministic(failures[-1].cause) else "builder"
        cell["reason"] = (f"{failures[-1].status} on {failures[-1].builder}: "
                          f"{failures[-1].reason}; to be tried again on another {where}")
        return cell
    return {"status": "pending"}


def _attempt_cell(status: str, build) -> dict:
    """A cell that shows one attempt: its log, how long it took, who made it."""
    cell = {"status": status, "build_id": build.build_id, "builder": build.builder,
            "os_release": build.os_release,
            "log": f"../../{LOGS_DIR}/{log_path(build.build_id)}",
            "duration_s": round(build.duration.total_seconds(), 1)}
    if build.status != "success":
        cell["reason"] = build.reason
        cell["cause"] = cause_context(build)
    return cell


def cause_context(build) -> Optional[dict]:
    """An unsuccessful attempt's cause as pages show it: code, label, detail and
    the Debian package that would fix it (None: recorded before causes were)."""
    cause = CAUSES.get(build.cause) if build.cause else None
    if cause is None:
        return None
    return {"code": cause.code, "label": cause.label, "detail": build.cause_detail or "",
            "package": build.cause_package}


def attempts_context(version: VersionData) -> list[dict]:
    """Every attempt at one release, oldest first: which builder made it, when, how
    it went (the operator's answer to "who failed this?")."""
    return [{
        "build_id": build.build_id, "abi": build.abi_tag, "platform": build.platform_tag,
        "os_release": build.os_release, "builder": build.builder,
        "slave_label": build.slave_label, "started": upload_time(build.started),
        "duration_s": round(build.duration.total_seconds(), 1), "status": build.status,
        "reason": build.reason, "log": f"../../{LOGS_DIR}/{log_path(build.build_id)}",
        "cause": cause_context(build) if build.status != "success" else None,
    } for build in version.builds]


def _not_built(project: ProjectData, version: VersionData) -> Optional[str]:
    """Why a release without wheels is not built (None: it is, or may yet be)."""
    if version.skip_reason or project.skip_reason:
        return f"skipped: {version.skip_reason or project.skip_reason}"
    if version.yanked:
        return "yanked"
    if version.policy_reason:
        return version.policy_reason
    if not version.has_sdist:
        return "no source distribution upstream"
    return None


def to_json(context: dict) -> bytes:
    return json.dumps(context, separators=(",", ":"), sort_keys=True).encode("utf-8")


class Renderer:
    """Renders the chameleon templates (loaded once, reused by one thread)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._templates: dict[str, Any] = {}

    @cached_property
    def _loader(self) -> PageTemplateLoader:
        return PageTemplateLoader(str(templates_dir()), ".pt")

    def _template(self, name: str) -> Any:
        try:
            return self._templates[name]
        except KeyError:
            template = self._templates[name] = self._loader[name]
            return template

    def render(self, template: str, **context: Any) -> bytes:
        text = self._template(template)(
            site_name=self.site.name, index_url=self.site.index_url,
            layout=self._template("layout"), yanked_attribute=yanked_attribute, **context)
        return text.encode("utf-8")
