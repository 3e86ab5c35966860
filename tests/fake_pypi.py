"""A fake upstream index over real HTTP: the only fake the tests allow.

It speaks what the master reads from an upstream index: the simple API as
HTML (PEP 503) and JSON (PEP 691, with ``_last-serial`` and ETags), the JSON
API (``/pypi/<project>/json``) and the XML-RPC change log
(``changelog_last_serial``, ``changelog_since_serial``, one page of
``page_size`` events at a time).  It serves real distribution files.  Tests
change it through methods named after what happens upstream (publish, yank,
remove, rename, ...), each of which appends the change-log events the real
index would, and can make it misbehave (HTTP errors, rate limits, garbage,
the change log switched off).
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SDIST_SUFFIXES = (".tar.gz", ".zip")


@dataclass
class Dist:
    filename: str
    data: bytes
    uploaded: Optional[datetime]  # None: the index does not say (PEP 700 makes it optional)
    requires_python: Optional[str]
    #: False, or the reason (True: yanked without one)
    yanked: Union[bool, str] = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(SDIST_SUFFIXES)


@dataclass
class Project:
    name: str
    summary: str = ""
    serial: int = 0
    releases: dict[str, list[Dist]] = field(default_factory=dict)
    #: PEP 792 (any string: tests also serve statuses the farm does not know)
    status: str = "active"
    status_reason: Optional[str] = None

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict
    status: int
    time: float


class FakePyPI:
    """Start with ``with FakePyPI() as pypi:``; see the module docstring."""

    def __init__(self, page_size: int = 100) -> None:
        self.page_size = page_size
        self.projects: dict[str, Project] = {}
        self.changelog: list[tuple[str, Optional[str], int, str, int]] = []
        self.serial = 0
        self.xmlrpc_enabled = True
        self.requests: list[RequestRecord] = []
        self._failures: list[int] = []
        self._garbles = 0
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- life cycle -------------------------------------------------------------

    def __enter__(self) -> "FakePyPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def json_url(self) -> str:
        return f"{self.url}/pypi/"

    @property
    def xmlrpc_url(self) -> str:
        return f"{self.url}/pypi"

    # --- what happens upstream ---------------------------------------------------------

    def _event(self, name: str, version: Optional[str], action: str,
               when: Optional[datetime] = None) -> int:
        self.serial += 1
        stamp = int((when or datetime.now(timezone.utc)).timestamp())
        self.changelog.append((name, version, stamp, action, self.serial))
        project = self.projects.get(canonicalize_name(name))
        if project is not None:
            project.serial = self.serial
        return self.serial

    def _project(self, name: str) -> Project:
        return self.projects[canonicalize_name(name)]

    def publish(self, name: str, version: str, *files: Path, summary: Optional[str] = None,
                upload_time: Optional[datetime] = None,
                requires_python: Optional[str] = None) -> None:
        """A release (new project and new version as needed) with its files."""
        with self.lock:
            key = canonicalize_name(name)
            if key not in self.projects:
                self.projects[key] = Project(name=name)
                self._event(name, None, "create", upload_time)
            project = self.projects[key]
            if summary is not None:
                project.summary = summary
            if version not in project.releases:
                project.releases[version] = []
                self._event(project.name, version, "new release", upload_time)
            for path in files:
                self._add(project, version, Path(path), upload_time, requires_python)

    def add_file(self, name: str, version: str, path: Path,
                 upload_time: Optional[datetime] = None,
                 requires_python: Optional[str] = None) -> None:
        """A file uploaded to an existing release (a wheel after its sdist, say)."""
        with self.lock:
            self._add(self._project(name), version, Path(path), upload_time, requires_python)

    def _add(self, project: Project, version: str, path: Path,
             upload_time: Optional[datetime], requires_python: Optional[str]) -> None:
        when = upload_time or datetime.now(timezone.utc)
        dist = Dist(path.name, path.read_bytes(), when, requires_python)
        project.releases.setdefault(version, []).append(dist)
        kind = "source" if dist.is_sdist else "py3"
        self._event(project.name, version, f"add {kind} file {path.name}", when)

    def remove_file(self, name: str, version: str, filename: str) -> None:
        with self.lock:
            project = self._project(name)
            project.releases[version] = [d for d in project.releases[version]
                                         if d.filename != filename]
            self._event(project.name, version, f"remove file {filename}")

    def remove_release(self, name: str, version: str) -> None:
        with self.lock:
            project = self._project(name)
            del project.releases[version]
            self._event(project.name, version, "remove release")

    def remove_project(self, name: str) -> None:
        with self.lock:
            project = self.projects.pop(canonicalize_name(name))
            self._event(project.name, None, "remove project")

    def yank(self, name: str, version: str, reason: Optional[str] = None) -> None:
        with self.lock:
            project = self._project(name)
            for dist in project.releases[version]:
                dist.yanked = reason or True
            self._event(project.name, version, "yank release")

    def unyank(self, name: str, version: str) -> None:
        with self.lock:
            project = self._project(name)
            for dist in project.releases[version]:
                dist.yanked = False
            self._event(project.name, version, "unyank release")

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            project = self.projects.pop(canonicalize_name(old))
            project.name = new
            self.projects[canonicalize_name(new)] = project
            self._event(new, None, f"rename from {old}")

    def set_summary(self, name: str, summary: str) -> None:
        with self.lock:
            project = self._project(name)
            project.summary = summary
            self._event(project.name, None, "update summary")

    def set_status(self, name: str, status: str, reason: Optional[str] = None) -> None:
        """PEP 792: a quarantined project lists no files on its simple page, its files
        are not served and its JSON API page is gone (as the real index does)."""
        with self.lock:
            project = self._project(name)
            project.status, project.status_reason = status, reason
            self._event(project.name, None, f"project status set to {status}")

    def forget_upload_times(self, name: str, version: str) -> None:
        """The index no longer says when this release's files were uploaded."""
        with self.lock:
            project = self._project(name)
            for dist in project.releases[version]:
                dist.uploaded = None
            project.serial = self.serial = self.serial + 1

    def noise(self, name: str) -> None:
        """Events a build farm has no use for."""
        with self.lock:
            project = self._project(name)
            self._event(project.name, None, "add Owner someone")
            self._event(project.name, None, "update classifiers")
            self._event(project.name, None, "docupdate")

    def log_events(self, rows: list[tuple[str, Optional[str], int, str]]) -> None:
        """Append raw change-log events (name, version, timestamp, action): for benchmarks."""
        with self.lock:
            for name, version, stamp, action in rows:
                self.serial += 1
                self.changelog.append((name, version, stamp, action, self.serial))

    # --- misbehaviour ---------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next *count* requests get HTTP *status* (429 comes with Retry-After: 1)."""
        with self.lock:
            self._failures.extend([status] * count)

    def garble_next(self, count: int) -> None:
        """The next *count* requests get 200 and bytes that are no document at all."""
        with self.lock:
            self._garbles += count

    # --- the documents -----------------------------------------------------------------

    def file_url(self, project: Project, dist: Dist) -> str:
        return f"{self.url}/files/{canonicalize_name(project.name)}/{dist.filename}"

    def simple_root(self, as_json: bool) -> tuple[bytes, str]:
        projects = sorted(self.projects.values(), key=lambda p: canonicalize_name(p.name))
        if as_json:
            return json.dumps({
                "meta": {"api-version": "1.1", "_last-serial": self.serial},
                "projects": [{"name": p.name, "_last-serial": p.serial} for p in projects],
            }).encode(), SIMPLE_JSON
        links = "".join(f'<a href="{canonicalize_name(p.name)}/">{html.escape(p.name)}</a>\n'
                        for p in projects)
        return (f"<!DOCTYPE html><html><body>\n{links}</body></html>").encode(), "text/html"

    def _dists(self, project: Project) -> list[tuple[str, Dist]]:
        return [(version, dist) for version, dists in project.releases.items() for dist in dists]

    def _status(self, project: Project) -> dict:
        return {"status": project.status,
                **({"reason": project.status_reason} if project.status_reason else {})}

    def simple_project(self, project: Project, as_json: bool) -> tuple[bytes, str]:
        dists = [] if project.quarantined else self._dists(project)
        if as_json:
            return json.dumps({
                "meta": {"api-version": "1.4", "_last-serial": project.serial},
                "name": canonicalize_name(project.name),
                "project-status": self._status(project),
                "versions": [] if project.quarantined else list(project.releases),
                "files": [{
                    "filename": dist.filename, "url": self.file_url(project, dist),
                    "hashes": {"sha256": dist.sha256}, "requires-python": dist.requires_python,
                    "yanked": dist.yanked, "size": len(dist.data),
                    **({"upload-time": _stamp(dist.uploaded)} if dist.uploaded else {}),
                } for _, dist in dists],
            }).encode(), SIMPLE_JSON
        links = []
        for _, dist in dists:
            attrs = f'href="{self.file_url(project, dist)}#sha256={dist.sha256}"'
            if dist.requires_python:
                attrs += f' data-requires-python="{html.escape(dist.requires_python)}"'
            if dist.yanked:
                reason = "" if dist.yanked is True else dist.yanked
                attrs += f' data-yanked="{html.escape(reason)}"'
            links.append(f"<a {attrs}>{dist.filename}</a><br/>\n")
        return (f"<!DOCTYPE html><html><body>\n{''.join(links)}</body></html>").encode(), \
            "text/html"

    def json_project(self, project: Project) -> bytes:
        def entry(dist: Dist) -> dict:
            return {
                "filename": dist.filename, "url": self.file_url(project, dist),
                "packagetype": "sdist" if dist.is_sdist else "bdist_wheel",
                "digests": {"sha256": dist.sha256}, "size": len(dist.data),
                "requires_python": dist.requires_python,
                "upload_time_iso_8601": _stamp(dist.uploaded) if dist.uploaded else None,
                "yanked": dist.yanked is not False,
                "yanked_reason": dist.yanked if isinstance(dist.yanked, str) else None,
            }
        latest = list(project.releases)[-1] if project.releases else None
        return json.dumps({
            "info": {"name": project.name, "summary": project.summary, "version": latest},
            "last_serial": project.serial,
            "releases": {v: [entry(d) for d in dists] for v, dists in project.releases.items()},
            "urls": [entry(d) for d in project.releases.get(latest, [])],
        }).encode()

    def xmlrpc(self, body: bytes) -> tuple[int, bytes]:
        try:
            params, method = xmlrpc.client.loads(body)
        except Exception:
            return 400, b"bad request"
        if method == "changelog_last_serial":
            result = self.serial
        elif method == "changelog_since_serial" and len(params) == 1:
            result = [list(e) for e in self.changelog if e[4] > params[0]][:self.page_size]
        else:
            fault = xmlrpc.client.Fault(1, f"no method {method}")
            return 200, xmlrpc.client.dumps(fault, methodresponse=True).encode()
        return 200, xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _handler(pypi: FakePyPI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain",
                   headers: Optional[dict] = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            pypi.requests.append(RequestRecord(self.command, self.path, dict(self.headers),
                                               status, time.monotonic()))

        def _misbehave(self) -> bool:
            with pypi.lock:
                if pypi._failures:
                    status = pypi._failures.pop(0)
                    headers = {"Retry-After": "1"} if status == 429 else None
                    self._reply(status, b"nope", headers=headers)
                    return True
                if pypi._garbles:
                    pypi._garbles -= 1
                    self._reply(200, b"\x00<garbage{{", "application/json")
                    return True
            return False

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self._misbehave():
                return
            if urlsplit(self.path).path.rstrip("/") != "/pypi" or not pypi.xmlrpc_enabled:
                self._reply(404, b"not found")
                return
            with pypi.lock:
                status, answer = pypi.xmlrpc(body)
            self._reply(status, answer, "text/xml")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if self._misbehave():
                return
            path = unquote(urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            as_json = SIMPLE_JSON in self.headers.get("Accept", "")
            with pypi.lock:
                if parts == ["simple"]:
                    etag = f'"{pypi.serial}-{int(as_json)}"'
                    if self.headers.get("If-None-Match") == etag:
                        self._reply(304, headers={"ETag": etag})
                        return
                    body, kind = pypi.simple_root(as_json)
                    self._reply(200, body, kind, {"ETag": etag,
                                                  "X-PyPI-Last-Serial": str(pypi.serial)})
                elif len(parts) == 2 and parts[0] == "simple":
                    self._project_page(parts[1], as_json)
                elif len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json":
                    project = pypi.projects.get(canonicalize_name(parts[1]))
                    if project is None or project.quarantined:
                        self._reply(404, b"not found")
                    else:
                        self._reply(200, pypi.json_project(project), "application/json",
                                    {"X-PyPI-Last-Serial": str(project.serial)})
                elif len(parts) == 3 and parts[0] == "files":
                    self._file(parts[1], parts[2])
                else:
                    self._reply(404, b"not found")

        def _project_page(self, name: str, as_json: bool) -> None:
            key = canonicalize_name(name)
            project = pypi.projects.get(key)
            if project is None:
                self._reply(404, b"not found")
            elif name != key:
                self._reply(301, headers={"Location": f"/simple/{key}/"})
            else:
                body, kind = pypi.simple_project(project, as_json)
                self._reply(200, body, kind, {"X-PyPI-Last-Serial": str(project.serial)})

        def _file(self, name: str, filename: str) -> None:
            project = pypi.projects.get(name)
            for dists in (project.releases.values() if project and not project.quarantined
                          else []):
                for dist in dists:
                    if dist.filename == filename:
                        self._reply(200, dist.data, "application/octet-stream")
                        return
            self._reply(404, b"not found")

    return Handler
