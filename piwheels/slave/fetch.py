"""The fetch phase of a build: everything it needs, from the upstream index, checked.

The slave itself, not build code, fetches: the job's sdist from the index's
simple API (PEP 691 JSON, or the PEP 503 HTML page), verified against the
sha256 the index gives for it, and its build dependencies as wheels only
(``pip download --only-binary=:all:`` with the build interpreter, so the tags
match; pip checks the index's hashes).  Nothing here runs code of the sdist:
its ``pyproject.toml`` is read from the archive as data.  The caches shared
between builds (pip's HTTP cache, and :class:`WheelCache`'s recently resolved
requirement sets) are written only by this phase; builds never see them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urldefrag, urljoin

import requests
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from .. import __version__
from ..errors import FetchError

try:
    import tomllib
except ImportError:  # Python < 3.11 (setup.py asks for tomli there)
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger("piwheels.slave.fetch")

USER_AGENT = f"piwheels-slave/{__version__} (wheel build farm; fetch phase)"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
#: What the slave asks the simple API for: JSON first, HTML if that is all there is.
SIMPLE_ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
#: Seconds one HTTP request may take to answer (not the whole download).
HTTP_TIMEOUT_S = 60.0
#: The largest sdist the slave downloads.
MAX_SDIST_BYTES = 1024 * 1024 * 1024
#: The largest pyproject.toml read from an sdist.
MAX_PYPROJECT_BYTES = 1024 * 1024
#: Bytes read from a download at a time.
CHUNK_BYTES = 256 * 1024
#: PEP 517's answer when an sdist names no build backend (PEP 518's legacy default).
LEGACY_REQUIRES = ("setuptools>=40.8.0", "wheel")
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
#: How long a set of build requirements, once resolved, is used again without asking
#: the index (a newer backend released meanwhile waits this long at most).
WHEEL_SET_REUSE_S = 3600.0
#: Sdist file endings, preferred first.
SDIST_ENDINGS = (".tar.gz", ".zip")


class FetchStopped(FetchError):
    """The build was cancelled or timed out while fetching; the message is the reason."""


@dataclass(frozen=True)
class IndexFile:
    """One file an index lists for a project."""

    filename: str
    url: str
    sha256: Optional[str]
    yanked: bool = False


@dataclass(frozen=True)
class BuildSystem:
    """An sdist's ``[build-system]``: what to fetch before its backend can run."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"requires": list(self.requires), "backend": self.backend,
                "backend_path": list(self.backend_path)}


class _Links(HTMLParser):
    """The anchors of a PEP 503 page: (href, data-yanked present)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, bool]] = []
        self._open: Optional[tuple[str, bool]] = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "a":
            values = dict(attrs)
            if values.get("href"):
                self._open = (values["href"], "data-yanked" in values)
                self._text = []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            href, yanked = self._open
            self.links.append((href, "".join(self._text).strip(), yanked))
            self._open = None


def parse_project_page(url: str, content_type: str, body: bytes) -> list[IndexFile]:
    """The files of a simple API project page at *url* (PEP 691 JSON or PEP 503 HTML)."""
    if content_type.split(";")[0].strip() == SIMPLE_JSON:
        try:
            data = json.loads(body)
            return [
                IndexFile(filename=str(f["filename"]), url=urljoin(url, str(f["url"])),
                          sha256=(f.get("hashes") or {}).get("sha256"),
                          yanked=bool(f.get("yanked", False)))
                for f in data["files"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FetchError(f"{url} is not a PEP 691 project page") from None
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    files = []
    for href, text, yanked in parser.links:
        target, fragment = urldefrag(urljoin(url, href))
        name, _, value = fragment.partition("=")
        filename = text or posixpath.basename(target)
        files.append(IndexFile(filename=filename, url=target,
                               sha256=value if name == "sha256" and value else None,
                               yanked=yanked))
    return files


def choose_sdist(files: list[IndexFile], package: str, version: str) -> IndexFile:
    """The sdist of *package* *version* among *files* (``.tar.gz`` before ``.zip``)."""
    wanted_name = canonicalize_name(package)
    wanted_version = Version(version)
    found = []
    for f in files:
        if not f.filename.endswith(SDIST_ENDINGS):
            continue
        try:
            name, file_version = parse_sdist_filename(f.filename)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if name == wanted_name and file_version == wanted_version:
            found.append(f)
    if not found:
        raise FetchError(f"the index has no sdist of {package} {version} "
                         f"(it lists {len(files)} file(s) for the project)")
    found.sort(key=lambda f: [f.filename.endswith(e) for e in SDIST_ENDINGS].index(True))
    return found[0]


class Fetcher:
    """Downloads from one upstream index; owns its HTTP session and User-Agent."""

    def __init__(self, index_url: str) -> None:
        self.index_url = index_url.rstrip("/") + "/"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    def sdist(self, package: str, version: str) -> IndexFile:
        """The index's entry for the sdist of *package* *version*."""
        url = f"{self.index_url}{canonicalize_name(package)}/"
        try:
            response = self.session.get(url, headers={"Accept": SIMPLE_ACCEPT},
                                        timeout=HTTP_TIMEOUT_S)
        except requests.RequestException as exc:
            raise FetchError(f"cannot read the index page {url}: {exc.__class__.__name__}") \
                from None
        if response.status_code == 404:
            raise FetchError(f"the index has no project {package} ({url}: HTTP 404)")
        if response.status_code != 200:
            raise FetchError(f"the index page {url} answered HTTP {response.status_code}")
        files = parse_project_page(response.url, response.headers.get("Content-Type", ""),
                                   response.content)
        return choose_sdist(files, package, version)

    def download(self, entry: IndexFile, dest_dir: Path,
                 stop: Callable[[], Optional[str]] = lambda: None) -> Path:
        """Download *entry* into *dest_dir*, refusing it unless its sha256 is the index's.

        *stop* is asked between chunks; a reason from it ends the download
        with :class:`FetchStopped`.
        """
        if not entry.sha256:
            raise FetchError(f"the index gives no sha256 for {entry.filename}: cannot verify it")
        if "/" in entry.filename or entry.filename.startswith("."):
            raise FetchError(f"the index names a file {entry.filename!r}")
        target = dest_dir / entry.filename
        digest = hashlib.sha256()
        size = 0
        try:
            with self.session.get(entry.url, stream=True, timeout=HTTP_TIMEOUT_S) as response:
                if response.status_code != 200:
                    raise FetchError(
                        f"downloading {entry.filename} answered HTTP {response.status_code}")
                with open(target, "wb") as f:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        reason = stop()
                        if reason is not None:
                            raise FetchStopped(reason)
                        size += len(chunk)
                        if size > MAX_SDIST_BYTES:
                            raise FetchError(f"{entry.filename} is larger than "
                                             f"{MAX_SDIST_BYTES // 2**20} MiB")
                        digest.update(chunk)
                        f.write(chunk)
        except requests.RequestException as exc:
            target.unlink(missing_ok=True)
            raise FetchError(f"downloading {entry.filename} failed: "
                             f"{exc.__class__.__name__}") from None
        except FetchError:
            target.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != entry.sha256.lower():
            target.unlink(missing_ok=True)
            raise FetchError(f"{entry.filename} does not match the index's sha256 "
                             f"(the index says {entry.sha256[:16]}..., the download is "
                             f"{digest.hexdigest()[:16]}...)")
        return target


def _pyproject_bytes(sdist: Path) -> Optional[bytes]:
    """The top directory's pyproject.toml in the archive, read as data (None if absent)."""
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as archive:
                for info in archive.infolist():
                    if _is_top_pyproject(info.filename):
                        if info.file_size > MAX_PYPROJECT_BYTES:
                            raise FetchError(f"{sdist.name}: pyproject.toml is too large")
                        return archive.read(info)
            return None
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive:
                if member.isfile() and _is_top_pyproject(member.name):
                    if member.size > MAX_PYPROJECT_BYTES:
                        raise FetchError(f"{sdist.name}: pyproject.toml is too large")
                    stream = archive.extractfile(member)
                    return stream.read() if stream is not None else None
        return None
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError(f"{sdist.name} is not a readable archive: {exc}") from None


#: The range of SOURCE_DATE_EPOCH a build gets: the dates a zip (a wheel) can
#: hold, 1980-01-01 to 2107-12-31 (a bogus member date must not break the build).
ZIP_FIRST, ZIP_LAST = 315532800, 4354819199


def source_date_epoch(sdist: Path) -> int:
    """The SOURCE_DATE_EPOCH of builds of *sdist*: the newest mtime of its members.

    A fact of the archive itself (read as data), so every rebuild of the same
    sdist gets the same one; clamped to what a wheel can record.
    """
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as archive:
                stamps = [int(datetime(*info.date_time, tzinfo=timezone.utc).timestamp())
                          for info in archive.infolist()]
        else:
            with tarfile.open(sdist, "r:*") as archive:
                stamps = [int(member.mtime) for member in archive]
    except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError(f"{sdist.name} is not a readable archive: {exc}") from None
    return min(ZIP_LAST, max([ZIP_FIRST, *stamps]))


def _is_top_pyproject(name: str) -> bool:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return len(parts) == 2 and parts[1] == "pyproject.toml"


def build_system(sdist: Path) -> BuildSystem:
    """What *sdist* says it needs to be built (PEP 517/518), without running any of it."""
    data = _pyproject_bytes(sdist)
    if data is None:
        return BuildSystem(LEGACY_REQUIRES, LEGACY_BACKEND)
    try:
        table = tomllib.load(io.BytesIO(data)).get("build-system")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FetchError(f"{sdist.name}: pyproject.toml is not valid TOML: {exc}") from None
    if table is None:
        return BuildSystem(LEGACY_REQUIRES, LEGACY_BACKEND)
    requires = table.get("requires") if isinstance(table, dict) else None
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise FetchError(f"{sdist.name}: pyproject.toml's build-system.requires "
                         "is not a list of strings")
    for requirement in requires:
        try:
            Requirement(requirement)
        except InvalidRequirement as exc:
            raise FetchError(f"{sdist.name}: bad build requirement {requirement!r}: {exc}") \
                from None
    backend = table.get("build-backend", LEGACY_BACKEND)
    backend_path = table.get("backend-path", [])
    if not isinstance(backend, str) or not isinstance(backend_path, list) or \
            not all(isinstance(p, str) for p in backend_path):
        raise FetchError(f"{sdist.name}: pyproject.toml's build-backend or backend-path "
                         "is malformed")
    return BuildSystem(tuple(requires), backend, tuple(backend_path))


def download_wheels_command(python: str, requirements: list[str], dest_dir: Path,
                            index_url: str, cache_dir: Path) -> list[str]:
    """``pip download`` of *requirements* as wheels only, with the build interpreter."""
    return [
        python, "-m", "pip", "download", "--only-binary", ":all:", "--dest", str(dest_dir),
        "--index-url", index_url, "--cache-dir", str(cache_dir),
        "--progress-bar", "off", "--disable-pip-version-check", "--no-input",
        "--", *requirements,
    ]


class WheelCache:
    """Sets of build requirements the fetch phase resolved lately, and their wheels.

    Most builds need the same few backends, so a set resolved by ``pip
    download`` within the last :data:`WHEEL_SET_REUSE_S` is reused instead of
    asking the index again.  Only the slave writes here; each build gets
    copies (never links, which an uncontained build could write through), and
    every copy is checked against the sha256 recorded when pip fetched it.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "fetched-wheels"

    @staticmethod
    def key(python: str, index_url: str, requirements: list[str]) -> str:
        text = json.dumps([python, index_url, sorted(requirements)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str, dest_dir: Path, now_s: float) -> Optional[list[str]]:
        """Copy the wheels of set *key* into *dest_dir*; their names, or None if none fresh."""
        record = self.root / "sets" / f"{key}.json"
        try:
            if now_s - record.stat().st_mtime > WHEEL_SET_REUSE_S:
                return None
            wheels = json.loads(record.read_text())
            for name, digest in wheels.items():
                data = (self.root / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != digest:
                    return None
                (dest_dir / name).write_bytes(data)
        except (OSError, ValueError, AttributeError):
            return None
        return sorted(wheels)

    def put(self, key: str, wheels: list[Path]) -> None:
        """Keep *wheels* (just fetched and checked by pip) as set *key*."""
        try:
            (self.root / "sets").mkdir(parents=True, exist_ok=True)
            digests = {}
            for wheel in wheels:
                data = wheel.read_bytes()
                digests[wheel.name] = hashlib.sha256(data).hexdigest()
                _replace(self.root / wheel.name, data)
            _replace(self.root / "sets" / f"{key}.json", json.dumps(digests).encode())
            self._prune(time.time())
        except OSError as exc:
            log.warning("cannot keep fetched wheels in %s: %s", self.root, exc)

    def _prune(self, now_s: float) -> None:
        """Drop sets no longer fresh, and the wheels no kept set names."""
        kept: set[str] = set()
        for record in (self.root / "sets").glob("*.json"):
            try:
                if now_s - record.stat().st_mtime > WHEEL_SET_REUSE_S:
                    record.unlink()
                else:
                    kept.update(json.loads(record.read_text()))
            except (OSError, ValueError):
                continue
        for wheel in self.root.glob("*.whl"):
            if wheel.name not in kept:
                wheel.unlink(missing_ok=True)


def _replace(path: Path, data: bytes) -> None:
    """Write *path* atomically (slaves sharing a cache may write the same file at once)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
