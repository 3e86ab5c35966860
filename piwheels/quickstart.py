"""piw-quickstart: a whole one-host farm for a few projects, for trying piwheels out.

It makes a throw-away database on the local PostgreSQL, starts a master that
follows only the named projects, one slave per requested CPython, and a web
server for the output, then prints the pip command to use and reports each
build as it is recorded.  Ctrl-C stops everything and drops the database.

The upstream index comes from --pypi-simple (or PIW_PYPI_SIMPLE), else it is
the index pip itself would use here, asked of pip.  Run as root, the slaves run
as an unprivileged build user (see piwheels.build_user).
"""

from __future__ import annotations

import json
import logging
import os
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

from . import cli, config, serving  # serving: docs/serving, shipped as piwheels.serving
from .build_user import Identity, Passage, closed_above, interpreter_trees, own_trees
from .control_client import ControlClient
from .db import Database
from .diagnosis import CAUSES
from .errors import ConfigError, PiwheelsError
from .fallback_server import FallbackServer
from .initdb import initdb
from .keys import PUBLIC_SUFFIX, make_key_pair, public_path
from .records import BuildData
from .slave import sandbox

BIN = Path(sys.executable).parent
#: Who the slaves run as when quickstart is started as root (slaves refuse root).
BUILD_USER = "piwbuild"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
#: --web-server choices, the default first.
WEB_SERVERS = ("auto", "nginx", "python")
#: A demo farm has one slave per ABI: a failed build is tried again by it after
#: this long (not the farm default of hours), then counts.
RETRY_DELAY_S = 30.0
#: How long the master and each slave may take to come up.
START_TIMEOUT_S = 60.0
#: How often the farm's builds are looked at while it runs.
WATCH_INTERVAL_S = 2.0
#: Lines of a failed process's log shown with the error.
LOG_TAIL_LINES = 15


def find_python(version: str) -> str:
    """An interpreter for "3.12" (or a path): installed by pyenv, or on PATH.

    pyenv's shims are skipped: they pick a Python by the caller's pyenv
    settings, which the unprivileged build user does not share.
    """
    if os.sep in version:
        return version
    for root in (Path.home() / ".pyenv" / "versions", Path("/root/.pyenv/versions")):
        for candidate in sorted(root.glob(f"{version}.*"), reverse=True):
            python = candidate / "bin" / f"python{version}"
            if python.exists():
                return str(python)
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if Path(directory).name == "shims":
            continue
        found = shutil.which(f"python{version}", path=directory)
        if found:
            return found
    raise ConfigError(f"no Python {version} found (looked in pyenv and for python{version} "
                      "on PATH); pass --python with a path instead")


#: Asks pip, as `pip download` would parse its options, for the index it uses,
#: its own built-in default and its version.
PIP_INDEX_SCRIPT = """
import json
from pip import __version__
from pip._internal.cli import cmdoptions
from pip._internal.commands import create_command
options, _ = create_command("download").parse_args([])
print(json.dumps({"url": options.index_url, "default": cmdoptions.index_url().default,
                  "pip": __version__}))
"""


def pip_index() -> tuple[str, str]:
    """The index pip here would use, read from pip itself, and where pip got it.

    pip applies PIP_INDEX_URL and its configuration files, else its built-in
    default; nothing of that is written here.
    """
    try:
        result = subprocess.run([sys.executable, "-c", PIP_INDEX_SCRIPT], capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        answer = json.loads(result.stdout)
        url, default, version = answer["url"], answer["default"], answer["pip"]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"cannot ask the pip of {sys.executable} which index it uses; name the upstream "
            "index with --pypi-simple URL (or PIW_PYPI_SIMPLE)") from None
    if os.environ.get("PIP_INDEX_URL"):
        source = "PIP_INDEX_URL"
    elif url != default:
        source = f"pip {version}'s configuration, as `pip config list` shows"
    else:
        source = f"pip {version}'s built-in default; --pypi-simple names another"
    return url, source


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
        self.logs = self.workdir / "logs"
        self.name = f"piwheels_quick_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(
            make_url(options.server).set(drivername="postgresql+psycopg2"),
            isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
            connect_args={"connect_timeout": 5})
        self.processes: dict[str, subprocess.Popen] = {}
        self.fallback: Optional[FallbackServer] = None
        self.database_made = False
        self.failed = False
        #: whom the slaves run as (None: as quick start itself), and how they reach their files
        self.user: Optional[Identity] = None
        self.passage: Optional[Passage] = None
        self.keys = self.workdir / "keys"
        self.control = f"ipc://{self.workdir}/control"
        self.status = f"ipc://{self.workdir}/status"

    def dsn(self, user: Optional[str] = None) -> str:
        url = make_url(self.options.server).set(database=self.name,
                                                drivername="postgresql+psycopg2")
        if user:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)

    # --- starting -------------------------------------------------------------------

    def start(self) -> None:
        o = self.options
        if o.web_server == "nginx":
            if not Path(NGINX).exists():
                raise ConfigError(f"--web-server nginx, but there is no {NGINX}")
            if not serving.NGINX_JS_MODULE.exists():
                raise ConfigError(f"--web-server nginx, but its njs module {serving.NGINX_JS_MODULE}"
                                  " is missing (apt install libnginx-mod-http-js)")
        pythons = {version: find_python(version) for version in o.python}
        self._plan_slaves(pythons)  # checks only: nothing is changed until it passes
        self._make_build_user()
        self.make_database()
        self.port = o.port or free_port()
        public = f"http://127.0.0.1:{self.port}/"
        self.logs.mkdir()
        slave_port, file_port = free_port(), free_port()
        master_key = self._make_keys()
        containment = sandbox.detect(config.default_of("bwrap"))
        if not containment.available:
            print(f"builds will not be contained ({containment.description}): the master "
                  "takes uncontained slaves", flush=True)
        self._spawn("master", [
            str(BIN / "piw-master"), "--dsn", self.dsn(self.name),
            "--output-path", str(self.output), "--public-url", public,
            "--site-name", "piwheels quick start", "--pypi-simple", o.pypi_simple,
            "--pypi-json", o.pypi_json or "", "--pypi-xmlrpc", "",
            "--reconcile-interval", "60", "--control-address", self.control,
            "--status-address", self.status,
            "--slave-bind", f"tcp://127.0.0.1:{slave_port}",
            "--file-bind", f"tcp://127.0.0.1:{file_port}",
            "--master-key", str(master_key), "--authorized-keys", str(self.keys / "authorized"),
            # a machine that cannot contain builds still gets a farm, and is told so
            *([] if containment.available else ["--containment", "optional"]),
            "--build-policy", "all" if o.all_versions else "newest:1",
            "--retry-delay", str(RETRY_DELAY_S),
            *[arg for project in o.projects for arg in ("--package-allow", project)],
        ])
        self._wait("the master", lambda snapshot: True)
        for version, python in pythons.items():
            work = self.workdir / f"slave-{version}"
            work.mkdir()
            if self.user is not None:
                os.chown(work, self.user.uid, self.user.gid)
            self._spawn(f"slave-{version}", [
                str(BIN / "piw-slave"), "--master", "127.0.0.1", "--slave-port", str(slave_port),
                "--file-port", str(file_port), "--label", f"quick-{version}",
                "--dir", str(work), "--python", python,
                "--slave-key", str(self._slave_key(f"quick-{version}")),
                "--master-public-key", str(public_path(master_key)),
            ], as_build_user=True)
        self._wait(f"{len(pythons)} slave(s)",
                   lambda snapshot: len(snapshot["slaves"]) >= len(pythons))
        self._serve()
        print(f"\nThe farm is up: {len(pythons)} slave(s) (Python {', '.join(pythons)}), "
              f"database {self.name}, files in {self.workdir}.\nWhen its wheels are built, install them with:\n\n"
              f"    pip install --extra-index-url {public}simple/ {' '.join(o.projects)}\n\n"
              f"Pages: {public}   Logs: {self.logs}   Ctrl-C stops everything.\n", flush=True)

    def _make_keys(self) -> Path:
        """The master's key pair and the directory its slaves are enrolled in; the
        master's secret key file."""
        self.keys.mkdir(mode=0o755)
        (self.keys / "authorized").mkdir(mode=0o755)
        master_key = self.keys / "master.key_secret"
        make_key_pair(master_key)
        return master_key

    def _slave_key(self, label: str) -> Path:
        """A key pair for one slave, its own (as the build user), enrolled on the master."""
        secret = self.keys / label / f"{label}.key_secret"
        make_key_pair(secret)
        if self.user is not None:
            for path in (secret.parent, secret, public_path(secret)):
                os.chown(path, self.user.uid, self.user.gid)
        shutil.copyfile(public_path(secret), self.keys / "authorized" / f"{label}{PUBLIC_SUFFIX}")
        return secret

    def _plan_slaves(self, pythons: dict[str, str]) -> None:
        """Check that every slave will run as the user it runs as, changing nothing.

        As root, slaves run as the build user (a stand-in until it exists);
        what it cannot reach they reach through a private mount namespace.
        """
        root = os.geteuid() == 0
        name = self.options.build_user
        who = (Identity.of_user(name) or Identity.stand_in(name)) if root else Identity.current()
        needs = [*own_trees(), self.workdir]
        for version, python in pythons.items():
            closed = closed_above(Path(python).absolute(), who)
            if closed is not None and not root:
                raise ConfigError(
                    f"{_named(version, python)} lies under {closed}, which {who.name} cannot "
                    "enter; run quick start as root (its slaves then reach it through a "
                    "private mount namespace), or pass --python an interpreter you can run")
            needs += interpreter_trees(python)
        passage = Passage(who, needs, self.workdir / ".passage")
        if passage.needed and not root:
            raise ConfigError(f"{who.name} cannot enter {passage.closed_text()}, where a slave "
                              f"needs files; `{passage.fix_command()}` as its owner lets it")
        missing = passage.missing_tools() if passage.needed else []
        if missing:
            raise ConfigError(
                f"{who.name} cannot enter {passage.closed_text()}, where the slaves need files, "
                f"and {', '.join(missing)} (util-linux) is missing to make a private mount "
                f"namespace for them; install util-linux, or `{passage.fix_command()}`")
        if passage.needed:
            (self.workdir / ".passage").mkdir()
        self.user, self.passage = (who if root else None), passage
        checks = {_named(version, python): [python, "-c", "import sys"]
                  for version, python in pythons.items()}
        checks["piw-slave"] = [str(BIN / "piw-slave"), "--version"]
        for what, argv in checks.items():
            self._check_runs(what, argv)
        if passage.needed:
            print(f"the slaves run as {who.name}, who cannot enter {passage.closed_text()}: "
                  "each runs in a private mount namespace that opens only what it needs "
                  "there (the host is not changed)", flush=True)

    def _check_runs(self, what: str, argv: list[str]) -> None:
        args, kwargs = self.passage.command(argv)
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd="/",
                                    stdin=subprocess.DEVNULL, env=self._build_env(), **kwargs)
            error = (result.stderr.strip().splitlines() or ["?"])[-1] if result.returncode else ""
        except OSError as exc:
            error = str(exc)
        if not error:
            return
        who = f" as {self.user.name}" if self.user is not None else ""
        fix = (f"; `{self.passage.fix_command()}` lets {self.user.name} in without one"
               if self.passage.needed else "")
        how = " in a private mount namespace" if self.passage.needed else ""
        raise ConfigError(f"{what} does not run{who}{how}: {error}{fix}")

    def _make_build_user(self) -> None:
        if self.user is None or Identity.of_user(self.user.name) is not None:
            return
        print(f"creating the unprivileged user {self.user.name} for the builds", flush=True)
        made = subprocess.run(["useradd", "--system", "--create-home", "--shell",
                               "/usr/sbin/nologin", self.user.name],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        self.user = Identity.of_user(self.user.name)
        if made.returncode != 0 or self.user is None:
            raise PiwheelsError(f"cannot create the build user: {made.stderr.strip()}")
        self.passage = Passage(self.user, self.passage.needs, self.passage.stage)

    def make_database(self) -> None:
        try:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
                self.database_made = True
                conn.exec_driver_sql(f'CREATE ROLE "{self.name}" LOGIN')
        except sa.exc.OperationalError as exc:
            raise PiwheelsError(
                f"cannot reach PostgreSQL at {self.options.server}: "
                f"{str(exc.orig).strip().splitlines()[0]}; start it, or name another "
                "server with --server") from None
        initdb_log = logging.getLogger("piwheels.initdb")
        level = initdb_log.level
        initdb_log.setLevel(logging.WARNING)
        try:
            with open(os.devnull, "w") as quiet:
                initdb(self.dsn(), self.name, assume_yes=True, out=quiet)
        finally:
            initdb_log.setLevel(level)

    def _build_env(self) -> dict:
        if self.user is None:
            return dict(os.environ)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.user.home,
                "LANG": "C.UTF-8"}

    def _spawn(self, name: str, args: list[str], as_build_user: bool = False) -> None:
        kwargs = {}
        env = dict(os.environ)
        if as_build_user:
            args, kwargs = self.passage.command(args)
            env = self._build_env()
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, **kwargs)

    def _wait(self, what: str, ready) -> None:
        """Until the master's snapshot satisfies *ready*; fail at once if a process died."""
        deadline = time.monotonic() + START_TIMEOUT_S
        client = ControlClient(self.control, timeout_s=1.0)
        try:
            while True:
                self.check_processes()
                try:
                    reply, snapshot = client.request("SNAPSHOT")
                except PiwheelsError:
                    reply, snapshot = None, None
                if reply == "SNAPSHOT" and ready(snapshot):
                    return
                if time.monotonic() > deadline:
                    self.failed = True
                    raise PiwheelsError(f"{what} did not come up within {START_TIMEOUT_S:.0f} s; "
                                        f"see the logs in {self.logs}")
                time.sleep(0.5)
        finally:
            client.close()

    def check_processes(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                self.failed = True
                raise PiwheelsError(
                    f"{name} stopped (exit status {proc.returncode}); the end of its log, "
                    f"{self.logs / (name + '.log')}:\n{self._tail(name)}")

    def _tail(self, name: str) -> str:
        try:
            lines = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "    (no log)"
        return "\n".join("    " + line for line in lines[-LOG_TAIL_LINES:])

    def _serve(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        if (self.options.web_server != "python" and Path(NGINX).exists()
                and serving.NGINX_JS_MODULE.exists()):
            site = _nginx_site().read_text()
            site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
            site = site.replace("/var/www/piwheels", str(self.output))
            site = site.replace(serving.NGINX_NAMES_SCRIPT_INSTALLED,
                                str(serving.NGINX_NAMES_SCRIPT))
            temp = self.workdir / "nginx-tmp"
            conf = self.workdir / "nginx.conf"
            conf.write_text(
                f"load_module {serving.NGINX_JS_MODULE};\n"
                f"daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
                f"error_log {self.logs}/nginx-error.log;\nevents {{ worker_connections 64; }}\n"
                f"http {{\n  include /etc/nginx/mime.types;\n"
                f"  access_log {self.logs}/nginx-access.log;\n"
                + "".join(f"  {kind}_temp_path {temp};\n"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                + f"{site}\n}}\n")
            self._spawn("nginx", [NGINX, "-c", str(conf), "-p", str(self.workdir)])
        else:
            try:
                self.fallback = FallbackServer(self.output, "127.0.0.1", self.port,
                                               self.logs / "http.log")
            except OSError as exc:
                raise PiwheelsError(f"cannot serve on port {self.port}: {exc}") from None
            self.fallback.start()
        self._wait_http()

    def _wait_http(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.check_processes()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.failed = True
                    raise PiwheelsError(f"the web server did not answer on port {self.port}; "
                                        f"see the logs in {self.logs}") from None
                time.sleep(0.2)

    # --- running --------------------------------------------------------------------

    def watch(self) -> None:
        """Report each build as the farm records it, until interrupted."""
        seen: set[int] = set()
        failures: dict[tuple[str, str, str], BuildData] = {}  # the latest per release x ABI
        all_done = None
        with Database(self.dsn(self.name)) as db:
            while True:
                self.check_processes()
                for package in self.options.projects:
                    project = db.get_project(package)
                    for version in project.versions if project else ():
                        for build in version.builds:
                            if build.build_id in seen:
                                continue
                            seen.add(build.build_id)
                            files = ", ".join(f.filename for f in build.files)
                            key = (project.package, version.version, str(build.target))
                            if build.status == "success":
                                failures.pop(key, None)
                            else:
                                failures[key] = build
                            print(f"built {project.package} {version.version} for "
                                  f"{build.target}: {build.status}"
                                  + (f" ({files})" if files else
                                     f" ({cause_line(build)})" if build.cause else
                                     f" ({build.reason})" if build.reason else ""),
                                  flush=True)
                pending = sum(db.build_statistics()["pending"].values())
                done = bool(seen) and pending == 0
                if done and not all_done:
                    print(f"nothing left to build ({len(seen)} build(s)); the farm keeps "
                          "following upstream until Ctrl-C", flush=True)
                    for line in failure_report(failures):
                        print(line, flush=True)
                all_done = done
                time.sleep(WATCH_INTERVAL_S)

    # --- stopping -------------------------------------------------------------------

    def stop(self) -> None:
        if self.fallback is not None:
            self.fallback.stop()
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(list(self.processes.values())):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.database_made:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{self.name}"')
        self.admin.dispose()
        if not self.processes and not self.database_made:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.options.keep or self.failed:
            print(f"stopped; the files and logs stay in {self.workdir}", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            print("stopped; the database and all files are gone", flush=True)


def cause_line(build: BuildData) -> str:
    """A failed attempt's cause, detail and the package that would fix it, in one line."""
    cause = CAUSES.get(build.cause or "", CAUSES["unknown"])
    detail = f": {build.cause_detail}" if build.cause_detail else ""
    fix = f"; install {build.cause_package}" if build.cause_package else ""
    return f"{cause.label}{detail}{fix}"


def failure_report(failures: dict[tuple[str, str, str], BuildData]) -> list[str]:
    """The summary once nothing is left to build: each failure's cause, and the
    Debian packages that would fix them (for the builder, then piw-rebuild)."""
    if not failures:
        return []
    lines = [f"{len(failures)} build(s) failed:"]
    for (package, version, abi_tag), build in sorted(failures.items()):
        lines.append(f"  {package} {version} for {abi_tag}: {cause_line(build)}")
    wanted = sorted({b.cause_package for b in failures.values() if b.cause_package})
    if wanted:
        lines.append(f"to fix them, install on the builder: sudo apt install {' '.join(wanted)}")
    return lines


def _named(version: str, python: str) -> str:
    """How messages name the interpreter asked for as *version* (or as a path)."""
    return python if version == python else f"Python {version} ({python})"


def _nginx_site() -> Path:
    """The documented nginx site, from a source tree or an installed package."""

    site = Path(serving.__file__).resolve().parent / "nginx-piwheels.conf"
    if not site.exists():
        raise PiwheelsError(f"{site} is missing: reinstall piwheels")
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
                        help="a PostgreSQL server where databases may be created "
                             "[env var: PIW_QUICKSTART_SERVER]")
    parser.add_argument("--build-user", default=BUILD_USER, metavar="USER",
                        help="run as root, the slaves run as this unprivileged user (made if "
                             "missing), in a private mount namespace when what they need "
                             "lies under a home it cannot enter")
    parser.add_argument("--port", type=int, default=0,
                        help="the web server's port (default: a free one)")
    parser.add_argument("--web-server", choices=WEB_SERVERS, default=WEB_SERVERS[0],
                        help="what serves the output: nginx if installed (auto), or Python's "
                             "own http.server, which needs nothing more")
    parser.add_argument("--keep", action="store_true",
                        help="keep the output and logs when stopping")
    parser.add_argument("--all-versions", action="store_true",
                        help="build every release of each project (default: only the newest)")
    options = parser.parse_args(argv)
    cli.configure_logging(options)
    options.python = options.python or [f"{sys.version_info[0]}.{sys.version_info[1]}"]
    if options.pypi_simple:
        source = _setting_source(parser, "pypi_simple")
    else:
        options.pypi_simple, source = pip_index()
    print(f"upstream index: {options.pypi_simple} (from {source})", flush=True)
    farm = QuickFarm(options)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        farm.start()
        farm.watch()
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        farm.stop()
    return 0


def _setting_source(parser, dest: str) -> str:
    """Where configargparse found the setting *dest*: a flag, a variable or a file."""
    flags = config.OPTIONS[dest].flags
    sources = parser.get_source_to_settings_dict()
    words = [w for _, (_, values) in sources.get("command_line", {}).items() for w in values]
    if any(w.split("=")[0] in flags for w in words):
        return "/".join(flags)
    for source, settings in sources.items():
        for key, (action, _) in settings.items():
            if action is not None and action.dest == dest:
                return key if source == "environment_variables" else source.partition("|")[2]
    return "the default"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
