"""A real nginx serving an output tree with the documented site configuration.

The site block is ``docs/serving/nginx-piwheels.conf`` itself: only its
``listen`` and ``root`` lines are replaced (each must appear exactly once), and
it is included in a small main configuration that keeps the pid file, logs
and temp directories under the test's own prefix.  The access log is written
one request a line (tab separated), so tests can see what clients fetched.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from farm import free_port

ROOT = Path(__file__).resolve().parent.parent
SITE_CONFIG = ROOT / "docs" / "serving" / "nginx-piwheels.conf"
DOCS_LISTEN = "listen 80;"
DOCS_ROOT = "root /var/www/piwheels;"
SYSTEM_MIME_TYPES = Path("/etc/nginx/mime.types")
START_TIMEOUT_S = 10.0

MAIN_CONFIG = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;

events {{
    worker_connections 256;
}}

http {{
    {mime_types}
    default_type application/octet-stream;
    log_format piwheels_test "$status\\t$request_method\\t$request_uri\\t$http_user_agent";
    access_log {prefix}/access.log piwheels_test;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    sendfile on;
    include {prefix}/piwheels-site.conf;
}}
"""

# The few types the output tree needs, where no system mime.types exists.
FALLBACK_TYPES = """types {
        text/html html;
        text/css css;
        text/xml xml;
        text/plain txt;
        application/json json;
        image/png png;
    }"""


def nginx_binary() -> Optional[str]:
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"), Path("/usr/local/sbin/nginx")) if p.exists()),
        None)


def render_site(port: int, output: Path) -> str:
    """The documented site block, listening on *port* of loopback and serving *output*."""
    text = SITE_CONFIG.read_text()
    for line in (DOCS_LISTEN, DOCS_ROOT):
        count = sum(1 for row in text.splitlines() if row.strip() == line)
        if count != 1:
            raise AssertionError(f"{SITE_CONFIG} must contain {line!r} exactly once, not {count}")
    return (text.replace(DOCS_LISTEN, f"listen 127.0.0.1:{port};")
                .replace(DOCS_ROOT, f"root {output};"))


@dataclass(frozen=True)
class Request:
    """One line of the access log."""

    status: int
    method: str
    uri: str
    user_agent: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


class NginxServer:
    """``with NginxServer(prefix, output) as nginx:`` serves *output* at ``nginx.url``."""

    def __init__(self, prefix: Path, output: Path) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt install nginx-light)")
        self.binary = binary
        self.prefix = Path(prefix)
        self.output = Path(output)
        self.port = 0
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def _write_config(self) -> Path:
        (self.prefix / "temp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "piwheels-site.conf").write_text(render_site(self.port, self.output))
        mime_types = (f"include {SYSTEM_MIME_TYPES};" if SYSTEM_MIME_TYPES.exists()
                      else FALLBACK_TYPES)
        # as root, workers would otherwise run as nobody, who cannot read a 0700 tmp dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        config = self.prefix / "nginx.conf"
        config.write_text(MAIN_CONFIG.format(prefix=self.prefix, mime_types=mime_types,
                                             user=user))
        return config

    def start(self) -> "NginxServer":
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # the free port may be taken before nginx binds it
            self.port = free_port()
            config = self._write_config()
            self.process = subprocess.Popen(
                [self.binary, "-p", f"{self.prefix}/", "-c", str(config),
                 "-e", str(self.error_log), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            if self._wait_until_listening():
                return self
            stderr = self.process.stderr.read().decode(errors="replace") \
                if self.process.poll() is not None else ""
            self.stop()
            if "Address already in use" not in stderr + self._error_text():
                break
        raise RuntimeError(f"nginx did not start:\n{stderr}\n{self._error_text()}")

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _error_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> "NginxServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- what happened -------------------------------------------------------

    def log_mark(self) -> int:
        """Where the access log ends now; pass to :meth:`requests_since`."""
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, mark: int = 0) -> list[Request]:
        """The requests logged after *mark* (nginx writes each line as a request ends)."""
        try:
            with open(self.access_log, "rb") as log:
                log.seek(mark)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        requests = []
        for line in text.splitlines():
            status, method, uri, agent = line.split("\t", 3)
            requests.append(Request(int(status), method, uri, agent))
        return requests

    def get(self, path: str, headers: Optional[dict[str, str]] = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """One request without following redirects: (status, headers, body).

        Header names come back in lower case; repeated headers are joined with ", ".
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            found: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                found[key] = f"{found[key]}, {value}" if key in found else value
            return response.status, found, body
        finally:
            conn.close()
