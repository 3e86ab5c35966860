"""The upstream index client: the XML-RPC change feed, the simple API and the JSON API.

It owns its HTTP session and User-Agent, keeps to at most one XML-RPC call a
second, and turns every answer into plain records.  An answer it cannot use
(HTTP error, rate limit, malformed body) raises :class:`UpstreamError`,
which says how long to wait before trying again.
"""

from __future__ import annotations

import time
import xmlrpc.client
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import requests
from packaging.utils import (
    InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
    parse_wheel_filename,
)

from . import __version__, limits
from .errors import InvalidVersion, PiwheelsError
from .names import normal_version
from .project_status import ACTIVE, PROJECT_STATUSES, QUARANTINED, clean_reason

USER_AGENT = f"piwheels/{__version__} (wheel build farm; +change-feed follower)"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
#: How a status upstream gave that this code does not know is recorded.
UNKNOWN_STATUS_REASON = "the upstream index gave an unknown status"
#: The fewest seconds between two XML-RPC calls.
XMLRPC_INTERVAL_S = 1.0
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


class UpstreamError(PiwheelsError):
    """The upstream index gave no usable answer; try again after ``retry_after_s``.

    ``permanent`` marks a refusal that retrying soon will not change (the
    host does not offer that API at all).
    """

    def __init__(self, message: str, retry_after_s: float = 1.0, *,
                 permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.permanent = permanent


@dataclass(frozen=True)
class ChangelogEvent:
    name: str
    version: Optional[str]
    timestamp: int
    action: str
    serial: int


@dataclass(frozen=True)
class UpstreamRelease:
    version: str
    released: Optional[datetime]  # None: upstream did not say when
    has_sdist: bool
    yanked: bool
    yank_reason: Optional[str]
    #: the sdist's Requires-Python as the simple page gives it (None: none said)
    requires_python: Optional[str] = None
    #: the wheels upstream serves, (filename, sha256 or None); None: not known
    #: (the simple page was not read), so what is recorded stays
    wheels: Optional[tuple[tuple[str, Optional[str]], ...]] = None


@dataclass(frozen=True)
class UpstreamProject:
    name: str
    summary: str
    last_serial: int
    #: None: upstream lists none now (the project is quarantined); keep what is known
    releases: Optional[dict[str, UpstreamRelease]]
    #: the PEP 792 status (a known one; see :func:`project_status_of`) and its reason
    status: str = ACTIVE
    status_reason: Optional[str] = None


def project_status_of(page: Any) -> tuple[str, Optional[str]]:
    """The (status, reason) a PEP 691 project page gives (PEP 792; none: active).

    A status this code does not know is taken for ``quarantined``, the safe
    reading (nothing served, nothing lost), with a reason that says so;
    :func:`is_unknown_status` tells the caller to log it.
    """
    marker = page.get("project-status") if isinstance(page, dict) else None
    if marker is None:
        return ACTIVE, None
    status = marker.get("status") if isinstance(marker, dict) else marker
    reason = clean_reason(marker.get("reason")) if isinstance(marker, dict) else None
    if status in PROJECT_STATUSES:
        return status, reason
    return QUARANTINED, f"{UNKNOWN_STATUS_REASON} {str(status)[:100]!r}"


def is_unknown_status(reason: Optional[str]) -> bool:
    return bool(reason) and reason.startswith(UNKNOWN_STATUS_REASON)


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _sha256(hashes: Any) -> Optional[str]:
    digest = hashes.get("sha256") if isinstance(hashes, dict) else None
    if isinstance(digest, str) and len(digest) == 64 and all(
            c in "0123456789abcdef" for c in digest.lower()):
        return digest.lower()
    return None


def _requires_python(value: Any) -> Optional[str]:
    """A Requires-Python the database can hold (None: none, or too long to keep whole)."""
    if not isinstance(value, str) or not value.strip() or len(value) > limits.REQUIRES_PYTHON:
        return None
    return value.strip()


def files_by_release(page: dict) -> dict[str, tuple[Optional[str], tuple]]:
    """{version: (the sdist's Requires-Python, ((wheel filename, sha256), ...))} from a
    PEP 691 project page.  A file whose name is no valid wheel or sdist name, or
    longer than the database keeps, is left out."""
    found: dict[str, tuple[Optional[str], list]] = {}
    name = str(page.get("name", ""))
    for f in page.get("files", ()):
        filename = f.get("filename") if isinstance(f, dict) else None
        if not isinstance(filename, str) or len(filename) > limits.FILENAME:
            continue
        version = _version_of(filename, name)
        if version is None:
            continue
        version = _version_key(version)
        if filename.endswith(".whl") and _wheel_project(filename) != canonicalize_name(name):
            continue  # not a valid wheel name, or another project's wheel
        requires, wheels = found.setdefault(version, (None, []))
        if filename.endswith(".whl"):
            wheels.append((filename, _sha256(f.get("hashes"))))
        elif requires is None:
            found[version] = (_requires_python(f.get("requires-python")), wheels)
    return {version: (requires, tuple(sorted(wheels)))
            for version, (requires, wheels) in found.items()}


def _version_key(version: str) -> str:
    """A version as the follower stores it (as it is, if it is not a valid one)."""
    try:
        return normal_version(version)
    except InvalidVersion:
        return version


def with_files(release: UpstreamRelease,
               files: dict[str, tuple[Optional[str], tuple]]) -> UpstreamRelease:
    """*release* with its Requires-Python and wheels from :func:`files_by_release`."""
    requires, wheels = files.get(_version_key(release.version), (None, ()))
    return replace(release, requires_python=requires, wheels=wheels)


def release_from_files(version: str, files: list[dict]) -> UpstreamRelease:
    """Summarise one release's files: first upload, any sdist, yanked (all files yanked)."""
    if not files:
        return UpstreamRelease(version, None, False, False, None)
    yanked = all(f["yanked"] is not False and f["yanked"] is not None for f in files)
    reason = None
    if yanked:
        reasons = [f["yank_reason"] for f in files if f["yank_reason"]]
        reason = reasons[0][:limits.REASON] if reasons else None
    return UpstreamRelease(
        version=version,
        released=min((f["uploaded"] for f in files if f["uploaded"] is not None),
                     default=None),
        has_sdist=any(f["sdist"] for f in files),
        yanked=yanked,
        yank_reason=reason,
    )


class PyPIClient:
    """Talks to one upstream index (see the module docstring)."""

    def __init__(self, *, simple_url: str, json_url: Optional[str] = None,
                 xmlrpc_url: Optional[str] = None, timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.simple_url = simple_url.rstrip("/") + "/"
        self.json_url = json_url.rstrip("/") + "/" if json_url else None
        self.xmlrpc_url = xmlrpc_url or None
        self.timeout_s = timeout_s
        self.clock = clock
        self.sleep = sleep
        self._next_xmlrpc_s = 0.0
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    # --- plumbing ---------------------------------------------------------------

    def _get(self, url: str, **headers: str) -> requests.Response:
        try:
            response = self.session.get(url, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UpstreamError(f"GET {url} failed: {exc.__class__.__name__}: {exc}") from None
        self._check(response, f"GET {url}")
        return response

    @staticmethod
    def _check(response: requests.Response, what: str) -> None:
        if response.status_code in (200, 304, 404):
            return
        if response.status_code == 429:
            try:
                retry = max(1.0, float(response.headers.get("Retry-After", "60")))
            except ValueError:
                retry = 60.0
            raise UpstreamError(f"{what}: rate limited (429)", retry)
        raise UpstreamError(f"{what}: HTTP {response.status_code}",
                            permanent=400 <= response.status_code < 500)

    @staticmethod
    def _json(response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"{what}: malformed JSON") from None

    def _xmlrpc(self, method: str, *params: Any) -> Any:
        if not self.xmlrpc_url:
            raise UpstreamError("no XML-RPC URL is configured", 3600)
        wait = self._next_xmlrpc_s - self.clock()
        if wait > 0:
            self.sleep(wait)
        self._next_xmlrpc_s = self.clock() + XMLRPC_INTERVAL_S
        what = f"XML-RPC {method}"
        try:
            response = self.session.post(
                self.xmlrpc_url, data=xmlrpc.client.dumps(params, method).encode("utf-8"),
                headers={"Content-Type": "text/xml"}, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UpstreamError(f"{what} failed: {exc.__class__.__name__}: {exc}") from None
        if response.status_code == 404:
            raise UpstreamError(f"{what}: HTTP 404", permanent=True)
        self._check(response, what)
        try:
            (result,), _ = xmlrpc.client.loads(response.content)
        except xmlrpc.client.Fault as fault:
            raise UpstreamError(
                f"{what}: fault {fault.faultCode}: {fault.faultString[:200]}") from None
        except Exception:  # the XML parser raises several types on garbage
            raise UpstreamError(f"{what}: malformed answer") from None
        return result

    # --- the change feed --------------------------------------------------------

    def changelog_last_serial(self) -> int:
        serial = self._xmlrpc("changelog_last_serial")
        if not isinstance(serial, int):
            raise UpstreamError("changelog_last_serial: not a number")
        return serial

    def changelog_since_serial(self, serial: int) -> list[ChangelogEvent]:
        """The next page of events after *serial*, oldest first."""
        rows = self._xmlrpc("changelog_since_serial", serial)
        if not isinstance(rows, list):
            raise UpstreamError("changelog_since_serial: not a list")
        events = []
        for row in rows:
            try:
                name, version, timestamp, action, event_serial = row
                events.append(ChangelogEvent(
                    str(name), None if version is None else str(version),
                    int(timestamp), str(action), int(event_serial)))
            except (TypeError, ValueError):
                raise UpstreamError(f"changelog_since_serial: malformed event {row!r:.200}") \
                    from None
        return events

    # --- the simple and JSON APIs -------------------------------------------------

    def project_serials(self, etag: Optional[str] = None
                        ) -> Optional[tuple[Optional[str], int, dict[str, tuple[str, int]]]]:
        """(etag, last serial, {canonical name: (display name, last serial)}); None if unchanged."""
        headers = {"Accept": SIMPLE_JSON}
        if etag:
            headers["If-None-Match"] = etag
        response = self._get(self.simple_url, **headers)
        if response.status_code == 304:
            return None
        if response.status_code == 404:
            raise UpstreamError(f"GET {self.simple_url}: HTTP 404")
        data = self._json(response, f"GET {self.simple_url}")
        try:
            projects = {}
            for project in data["projects"]:
                name = project["name"]
                projects[canonicalize_name(name)] = (name, int(project.get("_last-serial", 0)))
            serial = int(data["meta"].get("_last-serial", 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamError(f"GET {self.simple_url}: not a PEP 691 project list") from None
        return response.headers.get("ETag"), serial, projects

    def project(self, name: str) -> Optional[UpstreamProject]:
        """One project's releases and status (None if upstream does not have it).

        With a JSON API, its answer gives the releases and the simple page
        (which carries PEP 792 statuses) the status; a project the JSON API
        no longer shows but the simple page calls quarantined is quarantined,
        not gone.
        """
        if not self.json_url:
            return self._project_from_simple(name)
        project = self._project_from_json_api(name)
        page = self._simple_page(name)
        if page is None:
            return project
        status, reason = project_status_of(page[1])
        if project is None:
            if status != QUARANTINED:
                return None
            return UpstreamProject(name=str(page[1].get("name", name)), summary="",
                                   last_serial=page[0], releases=None,
                                   status=status, status_reason=reason)
        releases = None
        if status != QUARANTINED and project.releases is not None:
            try:
                files = files_by_release(page[1])
            except (TypeError, AttributeError):
                raise UpstreamError(f"GET {self.simple_url}{canonicalize_name(name)}/: "
                                    f"not a PEP 691 project page") from None
            releases = {v: with_files(r, files) for v, r in project.releases.items()}
        return replace(project, status=status, status_reason=reason, releases=releases)

    def _simple_page(self, name: str) -> Optional[tuple[int, Any]]:
        """(last serial, the PEP 691 project page) of *name*; None if there is none."""
        url = f"{self.simple_url}{canonicalize_name(name)}/"
        response = self._get(url, Accept=SIMPLE_JSON)
        if response.status_code == 404:
            return None
        data = self._json(response, f"GET {url}")
        if not isinstance(data, dict):
            raise UpstreamError(f"GET {url}: not a PEP 691 project page")
        try:
            serial = int(response.headers.get("X-PyPI-Last-Serial", 0))
        except ValueError:
            serial = 0
        return serial, data

    def _project_from_json_api(self, name: str) -> Optional[UpstreamProject]:
        url = f"{self.json_url}{canonicalize_name(name)}/json"
        response = self._get(url)
        if response.status_code == 404:
            return None
        data = self._json(response, f"GET {url}")
        try:
            releases = {}
            for version, files in data["releases"].items():
                releases[version] = release_from_files(version, [
                    {
                        "sdist": f["packagetype"] == "sdist",
                        "yanked": f.get("yanked", False) or False,
                        "yank_reason": f.get("yanked_reason"),
                        "uploaded": _parse_time(f.get("upload_time_iso_8601")),
                    }
                    for f in files
                ])
            info = data["info"]
            return UpstreamProject(
                name=info["name"], summary=(info.get("summary") or "")[:limits.DESCRIPTION],
                last_serial=int(data.get("last_serial", 0)), releases=releases)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamError(f"GET {url}: not a project JSON document") from None

    def _project_from_simple(self, name: str) -> Optional[UpstreamProject]:
        url = f"{self.simple_url}{canonicalize_name(name)}/"
        page = self._simple_page(name)
        if page is None:
            return None
        last_serial, data = page
        status, reason = project_status_of(data)
        if status == QUARANTINED:
            # upstream lists no files while it is quarantined: not a removal
            return UpstreamProject(name=str(data.get("name", name)), summary="",
                                   last_serial=last_serial, releases=None,
                                   status=status, status_reason=reason)
        try:
            by_version: dict[str, list[dict]] = {v: [] for v in data.get("versions", [])}
            for f in data["files"]:
                version = _version_of(f["filename"], data["name"])
                if version is None:
                    continue
                yanked = f.get("yanked", False)
                by_version.setdefault(version, []).append({
                    "sdist": f["filename"].endswith(SDIST_SUFFIXES),
                    "yanked": yanked is not False,
                    "yank_reason": yanked if isinstance(yanked, str) else None,
                    "uploaded": _parse_time(f.get("upload-time")),
                })
            upstream_files = files_by_release(data)
            return UpstreamProject(
                name=data["name"], summary="", last_serial=last_serial,
                releases={v: with_files(release_from_files(v, files), upstream_files)
                          for v, files in by_version.items()},
                status=status, status_reason=reason)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamError(f"GET {url}: not a PEP 691 project page") from None


def _wheel_project(filename: str) -> Optional[str]:
    try:
        return parse_wheel_filename(filename)[0]
    except InvalidWheelFilename:
        return None


def _version_of(filename: str, project: str) -> Optional[str]:
    """The version in a distribution's file name (wheel or sdist), if it can be told."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    stem = filename
    for suffix in SDIST_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    prefix = canonicalize_name(project)
    head, _, version = stem.rpartition("-")
    return version if head and canonicalize_name(head) == prefix else None
