"""The output tree served by Python alone, for quick start on a machine without nginx.

It follows the documented nginx site (docs/serving/nginx-piwheels.conf) where a
browser or pip would notice: build logs (``logs/…/N.txt.gz``) are gzip-encoded
text that a browser shows rather than downloads, a directory's page is its
``index.html`` or else its ``index.json`` (the project JSON API), and dot-files
are never served.  The simple index is served as HTML only, which PEP 691
allows and every client reads.
"""

from __future__ import annotations

import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Optional
from urllib.parse import unquote, urlsplit

#: The URL prefix under which build logs are stored gzip-compressed.
LOGS_PREFIX = "/logs/"
#: What a log is, once the browser has undone its gzip encoding.
LOG_TYPE = "text/plain; charset=utf-8"
#: A directory's pages, in the order nginx's ``index`` directive tries them.
INDEX_PAGES = ("index.html", "index.json")


class OutputRequestHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of the output tree, with the nginx site's types and encodings."""

    log_file: Optional[IO[str]] = None
    _gzip_text = False
    _status: Optional[int] = None

    def send_head(self):
        self._status = None
        path = unquote(urlsplit(self.path).path)
        self._gzip_text = path.startswith(LOGS_PREFIX) and path.endswith(".gz")
        if any(part.startswith(".") for part in path.split("/")):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        local = super().translate_path(path)
        if urlsplit(path).path.endswith("/") and Path(local).is_dir():
            for page in INDEX_PAGES:
                if (Path(local) / page).is_file():
                    return str(Path(local) / page)
        return local

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")  # nginx lists nothing either
        return None

    def guess_type(self, path) -> str:
        if self._gzip_text:
            return LOG_TYPE
        if str(path).endswith(".json"):
            return "application/json"
        return super().guess_type(path)

    def send_response(self, code, message=None) -> None:
        self._status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        if self._gzip_text and self._status == HTTPStatus.OK:
            self.send_header("Content-Encoding", "gzip")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if self.log_file is not None:
            self.log_file.write(f"{self.address_string()} {format % args}\n")
            self.log_file.flush()


class FallbackServer:
    """Serves *directory* on *host*:*port* from a background thread until :meth:`stop`."""

    def __init__(self, directory: Path, host: str, port: int, log_path: Path) -> None:
        self._log = open(log_path, "a", encoding="utf-8")
        handler = type("Handler", (OutputRequestHandler,), {"log_file": self._log})
        self._server = ThreadingHTTPServer((host, port),
                                           partial(handler, directory=str(directory)))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fallback-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._log.close()
