"""A real nginx or Apache serving an output tree with the documented site configuration.

The site is ``docs/serving/nginx-piwheels.conf`` or ``apache-piwheels.conf``
itself: only its address and document root (and, for nginx, the path of its
njs script) are replaced (each must appear as the docs have it), and it is
included in a small main configuration that keeps the pid file, logs and temp
directories under the test's own prefix.  The access log is written one
request a line (tab separated), so tests can see what clients fetched and
which form of a page they were given.
"""

from __future__ import annotations

import abc
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from farm import free_port

from piwheels.serving import (
    APACHE_SITE,
    NGINX_JS_MODULE,
    NGINX_NAMES_SCRIPT,
    NGINX_NAMES_SCRIPT_INSTALLED,
    NGINX_SITE,
)

DOCS_OUTPUT = "/var/www/piwheels"
START_TIMEOUT_S = 10.0

NGINX_MIME_TYPES = Path("/etc/nginx/mime.types")
NGINX_CONFIG = """\
load_module {js_module};
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;

events {{
    worker_connections 256;
}}

http {{
    {mime_types}
    default_type application/octet-stream;
    log_format piwheels_test
        "$status\\t$request_method\\t$request_uri\\t$sent_http_content_type\\t$http_user_agent";
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


APACHE_MODULES = Path("/usr/lib/apache2/modules")
#: what the documented site needs, beyond the modules built into Debian's apache2
APACHE_NEEDS = ("mpm_event", "authz_core", "dir", "mime", "rewrite", "headers")
APACHE_CONFIG = """\
ServerRoot {prefix}
PidFile {prefix}/httpd.pid
ErrorLog {prefix}/error.log
LogLevel warn
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
{user}{modules}
TypesConfig {mime_types}
LogFormat "%>s\\t%m\\t%<U%q\\t%{{Content-Type}}o\\t%{{User-Agent}}i" piwheels_test
CustomLog {prefix}/access.log piwheels_test
Include {prefix}/piwheels-site.conf
"""
SYSTEM_MIME_TYPES = Path("/etc/mime.types")
FALLBACK_MIME_TYPES = """\
text/html html
text/css css
text/plain txt
application/json json
image/png png
"""


def find_binary(name: str) -> Optional[str]:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name)
         if p.exists()), None)


def nginx_binary() -> Optional[str]:
    """nginx with the njs module the documented site needs, or None."""
    binary = find_binary("nginx")
    return binary if binary is not None and NGINX_JS_MODULE.exists() else None


def apache_binary() -> Optional[str]:
    """Debian's apache2 with the modules the documented site needs, or None."""
    binary = find_binary("apache2")
    if binary is None or not all((APACHE_MODULES / f"mod_{m}.so").exists() for m in APACHE_NEEDS):
        return None
    return binary


def render_site(site: Path, replacements: dict[str, str]) -> str:
    """The documented *site*, with each of its lines in *replacements* (there once) replaced."""
    text = site.read_text()
    for line, replacement in replacements.items():
        count = sum(1 for row in text.splitlines() if row.strip() == line)
        if count != 1:
            raise AssertionError(f"{site} must contain {line!r} exactly once, not {count}")
        text = text.replace(line, replacement)
    return text


@dataclass(frozen=True)
class Request:
    """One line of the access log."""

    status: int
    method: str
    uri: str
    content_type: str  # "-" when the answer had none
    user_agent: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


class WebServer(abc.ABC):
    """``with Server(prefix, output) as server:`` serves *output* at ``server.url``."""

    name = "web server"
    #: how to ask it to finish its requests and stop
    stop_signal = signal.SIGTERM

    def __init__(self, binary: Optional[str], prefix: Path, output: Path) -> None:
        if binary is None:
            raise RuntimeError(f"{self.name} is not installed")
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

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """Write the configuration for :attr:`port`; the command that runs the server."""

    def start(self) -> "NginxServer":
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # the free port may be taken before nginx binds it
            self.port = free_port()
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            if self._wait_until_listening():
                return self
            stderr = self.process.stderr.read().decode(errors="replace") \
                if self.process.poll() is not None else ""
            self.stop()
            if "Address already in use" not in stderr + self._error_text():
                break
        raise RuntimeError(f"{self.name} did not start:\n{stderr}\n{self._error_text()}")

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
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> "WebServer":
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
        """The requests logged after *mark* (each line is written as a request ends)."""
        try:
            with open(self.access_log, "rb") as log:
                log.seek(mark)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        requests = []
        for line in text.splitlines():
            status, method, uri, content_type, agent = line.split("\t", 4)
            requests.append(Request(int(status), method, uri, content_type, agent))
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


class NginxServer(WebServer):
    name = "nginx (apt install nginx-light libnginx-mod-http-js)"
    stop_signal = signal.SIGQUIT  # graceful: finish requests, then exit

    def __init__(self, prefix: Path, output: Path) -> None:
        super().__init__(nginx_binary(), prefix, output)

    def _command(self) -> list[str]:
        (self.prefix / "temp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "piwheels-site.conf").write_text(render_site(NGINX_SITE, {
            "listen 80;": f"listen 127.0.0.1:{self.port};",
            f"root {DOCS_OUTPUT};": f"root {self.output};",
            f"js_import piwheels_names from {NGINX_NAMES_SCRIPT_INSTALLED};":
                f"js_import piwheels_names from {NGINX_NAMES_SCRIPT};"}))
        mime_types = (f"include {NGINX_MIME_TYPES};" if NGINX_MIME_TYPES.exists()
                      else FALLBACK_TYPES)
        # as root, workers would otherwise run as nobody, who cannot read a 0700 tmp dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        config = self.prefix / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(prefix=self.prefix, mime_types=mime_types,
                                              user=user, js_module=NGINX_JS_MODULE))
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(config),
                "-e", str(self.error_log), "-g", "daemon off;"]


class ApacheServer(WebServer):
    """Apache 2.4 as Debian builds it, in the foreground.

    Apache never serves as root: started as root, its workers run as nobody,
    so the output tree (and the directories above it) must let others in; the
    farm writes pages and wheels readable by all, which this also proves.
    """

    name = "apache (apt install apache2-bin)"

    def __init__(self, prefix: Path, output: Path) -> None:
        super().__init__(apache_binary(), prefix, output)

    def _command(self) -> list[str]:
        (self.prefix / "piwheels-site.conf").write_text(render_site(APACHE_SITE, {
            "<VirtualHost *:80>": f"<VirtualHost 127.0.0.1:{self.port}>",
            f"DocumentRoot {DOCS_OUTPUT}": f"DocumentRoot {self.output}",
            f"<Directory {DOCS_OUTPUT}>": f"<Directory {self.output}>"}))
        user = ""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            user = f"User #{nobody.pw_uid}\nGroup #{nobody.pw_gid}\n"
        modules = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so"
                            for m in APACHE_NEEDS)
        mime_types = SYSTEM_MIME_TYPES
        if not mime_types.exists():
            mime_types = self.prefix / "mime.types"
            mime_types.write_text(FALLBACK_MIME_TYPES)
        config = self.prefix / "httpd.conf"
        config.write_text(APACHE_CONFIG.format(
            prefix=self.prefix, port=self.port, user=user, modules=modules,
            mime_types=mime_types))
        return [self.binary, "-f", str(config), "-DFOREGROUND"]
