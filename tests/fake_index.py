"""A small local package index over real HTTP, for builds in tests.

:class:`FakeIndex` serves the PEP 503 simple API (``/simple/`` and
``/simple/<project>/``, links with ``#sha256=`` fragments) for the files in one
directory, and the files themselves under ``/files/``.  Build tests put their
sdists there together with the build backend wheels (setuptools, wheel,
flit-core, hatchling, setuptools-scm, poetry-core, Cython, maturin and their
dependencies) that pip installs into each isolated build environment, so pip
never needs another index.  The wheels are fetched once into the tests' cache
(:data:`TEST_CACHE`) and kept between runs.
"""

from __future__ import annotations

import email.parser
import fcntl
import hashlib
import html
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

#: Where the tests keep what they fetch between runs (backend wheels, client venvs).
TEST_CACHE = Path(os.environ.get("PIWHEELS_TEST_CACHE") or Path.home() / ".cache" / "piwheels-tests")
#: The build backends (and build tools) the tests build with, as wheels: pip
#: installs them, with the dependencies fetched beside them, into each build
#: environment (setuptools and wheel for the factory's sdists, the rest for
#: the real-world kinds of :mod:`backend_sdists`).
BACKEND_PROJECTS = (
    "setuptools", "wheel", "flit-core", "hatchling", "setuptools-scm", "poetry-core", "Cython",
    # the Rust project of failing_sdists, which fails for want of cargo
    "maturin",
)
#: The oldest Python the tests build with (the backends must run there too).
OLDEST_BUILD_PYTHON = "3.9"
#: The file in a download directory naming the projects fetched into it.
FETCHED_LIST = ".fetched"


def project_of(filename: str) -> Optional[str]:
    """The canonical project name of a wheel or sdist file name, or None for other files."""
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _fetch_backend_wheels(dest: Path) -> None:
    for python_version in (None, OLDEST_BUILD_PYTHON):
        fetch = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary", ":all:",
             "--dest", str(dest), "--disable-pip-version-check",
             "--no-input", "--progress-bar", "off",
             *(["--python-version", python_version] if python_version else []),
             *BACKEND_PROJECTS],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
        )
        if fetch.returncode != 0:
            raise RuntimeError(
                f"pip download of {BACKEND_PROJECTS} failed:\n{fetch.stdout}{fetch.stderr}")


def download_backend_wheels(dest: Path) -> list[Path]:
    """The build backend wheels and their dependencies in *dest*, fetched with
    ``pip download`` if missing.

    It fetches the newest releases and the newest that still run on the oldest
    Python the tests build with, so every interpreter finds a backend.  *dest*
    names what it holds in :data:`FETCHED_LIST`; a project added to
    :data:`BACKEND_PROJECTS` is fetched into it at the next run.
    """
    wanted = sorted({canonicalize_name(p) for p in BACKEND_PROJECTS})
    listed = dest / FETCHED_LIST
    dest.mkdir(parents=True, exist_ok=True)
    # test workers running at once (pytest-xdist) fetch into the same cache: one does
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fetched = set(listed.read_text().split()) if listed.exists() else set()
        if not set(wanted) <= fetched:
            _fetch_backend_wheels(dest)
            listed.write_text("\n".join(wanted) + "\n")
    wheels = sorted(dest.glob("*.whl"))
    missing = set(wanted) - {project_of(w.name) for w in wheels}
    if missing:
        raise RuntimeError(f"no wheels of {sorted(missing)} in {dest}; delete it to fetch again")
    return wheels


class FakeIndex:
    """A PEP 503 index of the files in *root*, served on 127.0.0.1 while started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._hashes: dict[str, str] = {}
        self._requires_python: dict[str, Optional[str]] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the index is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def url(self) -> str:
        """The simple API's root, for ``--index-url``."""
        return self.base_url + "simple/"

    def add(self, path: Path) -> Path:
        """Serve a copy of the file at *path*; returns the copy."""
        target = self.root / path.name
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        with self._lock:
            self._hashes.pop(target.name, None)
            self._requires_python.pop(target.name, None)
        return target

    def tamper(self, filename: str, data: bytes) -> None:
        """Serve *data* as *filename* while announcing the hash of what it served
        before, as a compromised mirror or a corrupted download would."""
        self.sha256(filename)  # the announced hash stays the original's
        (self.root / filename).write_bytes(data)

    def files(self, project: str) -> list[str]:
        """The file names served for *project* (any spelling)."""
        wanted = canonicalize_name(project)
        return sorted(
            entry.name for entry in self.root.iterdir()
            if entry.is_file() and project_of(entry.name) == wanted
        )

    def projects(self) -> list[str]:
        return sorted({
            name for name in (project_of(entry.name) for entry in self.root.iterdir())
            if name is not None
        })

    def sha256(self, filename: str) -> str:
        with self._lock:
            digest = self._hashes.get(filename)
        if digest is None:
            digest = hashlib.sha256((self.root / filename).read_bytes()).hexdigest()
            with self._lock:
                self._hashes[filename] = digest
        return digest

    def requires_python(self, filename: str) -> Optional[str]:
        """A wheel's Requires-Python, for ``data-requires-python`` (pip skips what won't run)."""
        with self._lock:
            if filename in self._requires_python:
                return self._requires_python[filename]
        value = None
        if filename.endswith(".whl"):
            with zipfile.ZipFile(self.root / filename) as wheel:
                for member in wheel.namelist():
                    top, _, rest = member.partition("/")
                    if top.endswith(".dist-info") and rest == "METADATA":
                        metadata = email.parser.BytesParser().parsebytes(wheel.read(member))
                        value = metadata.get("Requires-Python")
                        break
        with self._lock:
            self._requires_python[filename] = value
        return value

    def start(self) -> "FakeIndex":
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

            def do_GET(self) -> None:
                index._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-index", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "FakeIndex":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests ----------------------------------------------------------------

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path = unquote(request.path.split("?", 1)[0].split("#", 1)[0])
        parts = [part for part in path.split("/") if part]
        if parts == ["simple"]:
            links = "".join(
                f'<a href="/simple/{quote(name)}/">{html.escape(name)}</a>\n'
                for name in self.projects()
            )
            self._reply_html(request, "Simple index", links)
        elif len(parts) == 2 and parts[0] == "simple":
            if parts[1] != canonicalize_name(parts[1]):
                request.send_response(HTTPStatus.MOVED_PERMANENTLY)
                request.send_header("Location", f"/simple/{canonicalize_name(parts[1])}/")
                request.end_headers()
                return
            names = self.files(parts[1])
            if not names:
                request.send_error(HTTPStatus.NOT_FOUND)
                return
            links = "".join(self._link(name) for name in names)
            self._reply_html(request, f"Links for {parts[1]}", links)
        elif len(parts) == 2 and parts[0] == "files":
            target = self.root / parts[1]
            if parts[1].startswith(".") or not target.is_file():
                request.send_error(HTTPStatus.NOT_FOUND)
                return
            data = target.read_bytes()
            request.send_response(HTTPStatus.OK)
            request.send_header("Content-Type", "application/octet-stream")
            # As real indexes do: files never change, so pip's HTTP cache keeps them.
            request.send_header("Cache-Control", "max-age=31536000, immutable")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        else:
            request.send_error(HTTPStatus.NOT_FOUND)

    def _link(self, filename: str) -> str:
        requires_python = self.requires_python(filename)
        extra = (
            f' data-requires-python="{html.escape(requires_python)}"' if requires_python else ""
        )
        return (
            f'<a href="/files/{quote(filename)}#sha256={self.sha256(filename)}"{extra}>'
            f"{html.escape(filename)}</a>\n"
        )

    @staticmethod
    def _reply_html(request: BaseHTTPRequestHandler, title: str, body: str) -> None:
        data = (
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
            f"content=\"1.0\"><title>{html.escape(title)}</title></head><body>\n"
            f"{body}</body></html>\n"
        ).encode("utf-8")
        request.send_response(HTTPStatus.OK)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Cache-Control", "no-cache")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
