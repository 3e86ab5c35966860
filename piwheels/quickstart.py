"""piw-quickstart: a whole one-host farm for a few projects, for trying piwheels out.

It makes a throw-away database on the local PostgreSQL, starts a master that
follows only the named projects, one slave per requested CPython, and a web
server for the output, then prints the pip command to use.  Ctrl-C stops
everything and drops the database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from . import cli, config
from .control_client import StatusFeed
from .errors import ConfigError, PiwheelsError
from .initdb import initdb

BIN = Path(sys.executable).parent
#: Where the builds run when quickstart is started as root (slaves refuse root).
BUILD_USER = "piwbuild"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def find_python(version: str) -> str:
    """An interpreter for "3.12" (or a path): on PATH, or installed by pyenv."""
    if os.sep in version:
        return version
    found = shutil.which(f"python{version}")
    if found:
        return found
    for root in (Path.home() / ".pyenv" / "versions", Path("/root/.pyenv/versions")):
        for candidate in sorted(root.glob(f"{version}.*"), reverse=True):
            python = candidate / "bin" / f"python{version}"
            if python.exists():
                return str(python)
    raise ConfigError(f"no Python {version} found (looked for python{version} on PATH and "
                      "in pyenv); pass --python with a path instead")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class QuickFarm:
    """The processes and the database of one quick-start farm."""

    def __init__(self, options) -> None:
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix="piwheels-quickstart-"))
        os.chmod(self.workdir, 0o755)
        self.output = self.workdir / "output"
        self.name = f"piwheels_quick_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(
            make_url(options.server).set(drivername="postgresql+psycopg2"),
            isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.processes: list[subprocess.Popen] = []
        self.database_made = False
        self.user = None
        if os.geteuid() == 0:
            self.user = self._build_user()

    def _build_user(self):
        try:
            return pwd.getpwnam(BUILD_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--create-home", "--shell",
                            "/usr/sbin/nologin", BUILD_USER], check=True)
            return pwd.getpwnam(BUILD_USER)

    def dsn(self, user: Optional[str] = None) -> str:
        url = make_url(self.options.server).set(database=self.name,
                                                drivername="postgresql+psycopg2")
        if user:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)

    def make_database(self) -> None:
        try:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
                conn.exec_driver_sql(f'CREATE ROLE "{self.name}" LOGIN')
        except sa.exc.OperationalError as exc:
            raise PiwheelsError(
                f"cannot reach PostgreSQL at {self.options.server}: "
                f"{str(exc.orig).strip().splitlines()[0]}") from None
        self.database_made = True
        with open(os.devnull, "w") as quiet:
            initdb(self.dsn(), self.name, assume_yes=True, out=quiet)

    def start(self) -> None:
        o = self.options
        self.make_database()
        self.port = o.port or free_port()
        public = f"http://127.0.0.1:{self.port}/"
        logs = self.workdir / "logs"
        logs.mkdir()
        self.control = f"ipc://{self.workdir}/control"
        self.status = f"ipc://{self.workdir}/status"
        slave_port, file_port = free_port(), free_port()
        self._spawn("master", [
            str(BIN / "piw-master"), "--dsn", self.dsn(self.name),
            "--output-path", str(self.output), "--public-url", public,
            "--site-name", "piwheels quick start", "--pypi-simple", o.pypi_simple,
            "--pypi-json", o.pypi_json or "", "--pypi-xmlrpc", "",
            "--reconcile-interval", "60", "--control-address", self.control,
            "--status-address", self.status,
            "--slave-bind", f"tcp://127.0.0.1:{slave_port}",
            "--file-bind", f"tcp://127.0.0.1:{file_port}",
            *[arg for project in o.projects for arg in ("--package-allow", project)],
        ], logs)
        time.sleep(2)
        for version in o.python or [f"{sys.version_info[0]}.{sys.version_info[1]}"]:
            python = find_python(version)
            work = self.workdir / f"slave-{version}"
            work.mkdir()
            if self.user is not None:
                os.chown(work, self.user.pw_uid, self.user.pw_gid)
            self._spawn(f"slave-{version}", [
                str(BIN / "piw-slave"), "--master", "127.0.0.1", "--slave-port", str(slave_port),
                "--file-port", str(file_port), "--label", f"quick-{version}",
                "--dir", str(work), "--python", python,
            ], logs, as_build_user=True)
        self._serve(logs)
        print(f"\nThe farm is up (files in {self.workdir}). When its wheels are built, use:\n\n"
              f"    pip install --extra-index-url {public}simple/ {' '.join(o.projects)}\n\n"
              f"Pages: {public}   Logs: {logs}   Ctrl-C stops everything.\n", flush=True)

    def _spawn(self, name: str, args: list[str], logs: Path, as_build_user: bool = False) -> None:
        log = open(logs / f"{name}.log", "ab")
        kwargs = {}
        env = dict(os.environ)
        if as_build_user and self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env = {"PATH": env.get("PATH", "/usr/bin:/bin"), "HOME": self.user.pw_dir,
                   "LANG": "C.UTF-8"}
        self.processes.append(subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True, **kwargs))

    def _serve(self, logs: Path) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        if Path(NGINX).exists():
            site = _nginx_site().read_text()
            site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
            site = site.replace("/var/www/piwheels", str(self.output))
            conf = self.workdir / "nginx.conf"
            conf.write_text(
                f"daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
                f"error_log {logs}/nginx-error.log;\nevents {{ worker_connections 64; }}\n"
                f"http {{\n  include /etc/nginx/mime.types;\n"
                f"  access_log {logs}/nginx-access.log;\n"
                f"  client_body_temp_path {self.workdir}/nginx-tmp;\n"
                f"  proxy_temp_path {self.workdir}/nginx-tmp;\n"
                f"  fastcgi_temp_path {self.workdir}/nginx-tmp;\n"
                f"  uwsgi_temp_path {self.workdir}/nginx-tmp;\n"
                f"  scgi_temp_path {self.workdir}/nginx-tmp;\n{site}\n}}\n")
            self._spawn("nginx", [NGINX, "-c", str(conf), "-p", str(self.workdir)], logs)
        else:
            self._spawn("http", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                 "--directory", str(self.output), str(self.port)], logs)

    def watch(self) -> None:
        """Report builds as the farm makes them, until interrupted."""
        feed = StatusFeed(self.status)
        seen = None
        try:
            while True:
                msg = feed.poll(5)
                for proc in self.processes:
                    if proc.poll() is not None:
                        raise PiwheelsError(f"{proc.args[0]} stopped (status {proc.returncode}); "
                                            f"see the logs in {self.workdir}/logs")
                if msg and msg[0] == "MASTER":
                    recorder = msg[1]["master"].get("build_recorder", {})
                    done = recorder.get("recorded")
                    if done is not None and done != seen:
                        seen = done
                        print(f"builds recorded so far: {done}", flush=True)
        finally:
            feed.close()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.database_made:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{self.name}"')
        self.admin.dispose()
        if not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        print("stopped", flush=True)


def _nginx_site() -> Path:
    """The documented nginx site, from a source tree or an installed package."""
    site = Path(__file__).resolve().parent.parent / "docs" / "serving" / "nginx-piwheels.conf"
    if not site.exists():
        raise PiwheelsError("quick start runs from a source checkout (see ./quickstart)")
    return site


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser("piw-quickstart", __doc__.splitlines()[0],
                                ["pypi_simple", "pypi_json", "verbose", "quiet", "log_file"])
    parser.add_argument("projects", nargs="+", metavar="PROJECT",
                        help="the upstream projects to build")
    parser.add_argument("--python", action="append", metavar="VERSION",
                        help="a CPython to build with, e.g. 3.11 (repeat for several ABIs; "
                             "default: this one)")
    parser.add_argument("--server", metavar="URL",
                        default=os.environ.get("PIW_QUICKSTART_SERVER",
                                               "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server where databases may be created")
    parser.add_argument("--port", type=int, default=0, help="the web server's port")
    parser.add_argument("--keep", action="store_true", help="keep the output when stopping")
    options = parser.parse_args(argv)
    cli.configure_logging(options)
    if not options.pypi_simple:
        raise ConfigError("name the upstream index with --pypi-simple URL (or PIW_PYPI_SIMPLE), "
                          "e.g. the /simple/ address of the public package index")
    farm = QuickFarm(options)
    try:
        farm.start()
        farm.watch()
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        farm.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
