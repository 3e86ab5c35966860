"""Sdists that attack the machine building them, for the containment tests.

Each is a real sdist whose build code tries one attack the moment pip runs it
and then fails the build.  The code sits where a stranger's code sits: in
``setup.py`` (run by setuptools' first hook) or in an in-tree PEP 517 backend
(``backend-path``), which every hook imports first; the backend form needs no
build dependency, so it costs a build no more than pip's own start-up.

What the code managed goes into the build log, one line a step::

    PIW-HOSTILE <attack> started (pid ..., uid ...)
    PIW-HOSTILE <attack>/<target>: MANAGED: <what it got>
    PIW-HOSTILE <attack>/<target>: blocked: <the error it met>
    PIW-HOSTILE <attack> finished

:func:`parse_reports` reads them back.  A step's line is the attacker's word
only: the tests also look at the host themselves (a file left behind, a
connection the test's listener took, a process still running).  The attacks
are bounded (a fork bomb stops at a cap, a disk filler at a byte count), so
an attack that nothing stops ends by itself and fails the test, not the
machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from sdist_factory import write_sdist

#: The first word of every report line.
REPORT_WORD = "PIW-HOSTILE"
#: The name of a hostile sdist of *attack* (one project per attack).
NAME_PREFIX = "hostile-"
#: The environment variable the test plants a secret in (the slave's environment).
SECRET_VARIABLE = "PIW_TEST_SECRET"

# Runs first in every hostile sdist: the attack's settings and the report line.
_PRELUDE = """\
import json as _json
import os
import sys

_ATTACK = {attack!r}
CONFIG = _json.loads({config!r})


def report(target, managed, detail):
    word = "MANAGED" if managed else "blocked"
    detail = " ".join(str(detail).split())[:400]
    print(f"PIW-HOSTILE {{_ATTACK}}/{{target}}: {{word}}: {{detail}}", flush=True)


def error_text(exc):
    return f"{{exc.__class__.__name__}}: {{exc}}"


print(f"PIW-HOSTILE {{_ATTACK}} started (pid {{os.getpid()}}, uid {{os.getuid()}})", flush=True)
"""

_EPILOGUE = """\
print(f"PIW-HOSTILE {_ATTACK} finished", flush=True)
raise SystemExit(f"hostile sdist: the {_ATTACK} attack is over; it makes no wheel")
"""

#: wheel_dirs(): the --wheel-dir of every pip above this process (read from
#: /proc): the one host directory a contained build writes to.
WHEEL_DIRS = """\
def wheel_dirs():
    found, pid = [], os.getppid()
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [arg.decode() for arg in f.read().split(b"\\0")]
            with open(f"/proc/{pid}/stat", "rb") as f:
                line = f.read()
        except OSError:
            break
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = "/"
        for i, arg in enumerate(argv):
            if arg in ("--wheel-dir", "-w") and i + 1 < len(argv):
                found.append(os.path.join(cwd, argv[i + 1]))
            elif arg.startswith("--wheel-dir="):
                found.append(os.path.join(cwd, arg.split("=", 1)[1]))
        pid = int(line[line.rindex(b")") + 2:].split()[1])
        if pid <= 1:
            break
    return found
"""

# --- the attacks ---------------------------------------------------------------------
# Each reads CONFIG (what the test tells it: ports, paths, caps) and calls report().

#: Connect to every target: TCP ports on loopback and Unix sockets.  A
#: PostgreSQL target is asked for a session as user postgres, so "logged in"
#: means exactly that.
CONNECT = """\
import socket
import struct


def postgres_login(sock):
    params = b"user\\0postgres\\0database\\0postgres\\0\\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    reply = sock.recv(64)
    if reply[:1] == b"R" and len(reply) >= 9 and struct.unpack("!i", reply[5:9])[0] == 0:
        return "logged in to PostgreSQL as postgres"
    return f"connected; the server answered {reply[:16]!r}"


for target in CONFIG["targets"]:
    unix = "path" in target
    sock = socket.socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(3)
    where = target["path"] if unix else f"{target['host']}:{target['port']}"
    try:
        sock.connect(target["path"] if unix else (target["host"], target["port"]))
    except OSError as exc:
        report(target["name"], False, f"{where}: {error_text(exc)}")
        sock.close()
        continue
    try:
        detail = postgres_login(sock) if target.get("postgres") else "connected"
        if not target.get("postgres"):
            sock.sendall(b"PIW-HOSTILE was here\\n")
    except OSError as exc:
        detail = f"connected, then {error_text(exc)}"
    finally:
        sock.close()
    report(target["name"], True, f"{where}: {detail}")
"""

#: Read secrets: files by path, the slave's environment by its pid (as seen
#: outside any namespace), and every process environment it can see.  What
#: it reads it prints, as a thief would send it out through the public log.
SECRETS = """\
for name, path in CONFIG["files"].items():
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        report(name, False, f"{path}: {error_text(exc)}")
        continue
    report(name, bool(data.strip()), f"{path}: read {len(data)} bytes: {data[:300]!r}")

needle = CONFIG["variable"].encode() + b"="


def environ_secret(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        for entry in f.read().split(b"\\0"):
            if entry.startswith(needle):
                return entry
    return None


seen, stolen = [], False
for pid in CONFIG["slave_pids"]:
    try:
        entry = environ_secret(pid)
    except OSError as exc:
        seen.append(f"/proc/{pid}/environ: {error_text(exc)}")
    else:
        stolen = stolen or entry is not None
        seen.append(f"/proc/{pid}/environ: {entry!r}")
report("slave environ", stolen, "; ".join(seen))

readable, found = 0, []
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            entry = environ_secret(int(name))
        except OSError:
            continue
        readable += 1
        if entry is not None:
            found.append((int(name), entry))
report("any environ", bool(found),
       f"read {readable} process environments; with the secret: {found[:3]!r}")
"""

#: Write a file named for the test's token into each directory; then append
#: to every file of the shared cache (a poisoning path for later builds).
WRITES = """\
for name, directory in CONFIG["dirs"].items():
    path = os.path.join(directory, "piw-hostile-" + CONFIG["token"])
    try:
        with open(path, "w") as f:
            f.write("written by a build\\n")
    except OSError as exc:
        report(name, False, f"{path}: {error_text(exc)}")
    else:
        report(name, True, f"wrote {path}")

seen, appended, errors = 0, 0, set()
for top, dirs, files in os.walk(CONFIG["cache"]):
    for name in files:
        seen += 1
        try:
            with open(os.path.join(top, name), "ab") as f:
                f.write(b"poisoned by a build")
            appended += 1
        except OSError as exc:
            errors.add(error_text(exc))
    for name in dirs:
        path = os.path.join(top, name, "piw-hostile-" + CONFIG["token"])
        try:
            with open(path, "w") as f:
                f.write("written by a build\\n")
            appended += 1
        except OSError as exc:
            errors.add(error_text(exc))
report("cache files", appended > 0,
       f"{CONFIG['cache']}: {seen} files seen, {appended} written; {sorted(errors)[:2]}")
"""

#: A fork bomb with a cap: children that sleep, as many as it can start.
FORK_BOMB = """\
import time

started, stopped_by = 0, None
deadline = time.monotonic() + CONFIG["seconds"]
while started < CONFIG["cap"] and time.monotonic() < deadline:
    try:
        child = os.fork()
    except OSError as exc:
        stopped_by = exc
        break
    if child == 0:
        try:
            # let go of the build's output, so the build does not wait for it
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            time.sleep(CONFIG["child_sleep_s"])
        finally:
            os._exit(0)
    started += 1
report("processes", stopped_by is None,
       f"started {started} processes"
       + (f", then {error_text(stopped_by)}" if stopped_by else f" (the cap of {CONFIG['cap']})"))
"""

#: A grandchild that leaves the session and the environment behind, closes
#: its output and leaves the build's directory: nothing it carries says whose
#: it is but the marker in its command line, which the test looks for.
ESCAPEE = """\
child = os.fork()
if child == 0:
    try:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.chdir("/")
            os.execve(sys.executable,
                      [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))",
                       str(CONFIG["sleep_s"]), CONFIG["marker"]], {})
    finally:
        os._exit(0)
os.waitpid(child, 0)
report("spawn", True, "started a setsid + execve(env={}) grandchild that sleeps "
       f"{CONFIG['sleep_s']} s")
"""

#: Fill every writable place it knows with incompressible bytes, up to a cap.
DISK_FILLER = WHEEL_DIRS + """
chunk = os.urandom(1024 * 1024)
places = {"build dir": os.getcwd(), "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
          "/tmp": "/tmp", "/var/tmp": "/var/tmp", "/dev/shm": "/dev/shm", "/dev": "/dev",
          "HOME": os.environ.get("HOME", "/")}
for directory in wheel_dirs()[:1]:
    places["wheel dir"] = directory
for name, directory in places.items():
    # (a place that is another under a second name is written again: that
    # file is truncated first, so nothing is written twice over)
    path = os.path.join(directory, "piw-filler-" + CONFIG["token"])
    written = 0
    try:
        with open(path, "wb") as f:
            while written < CONFIG["cap_bytes"]:
                written += f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        report(name, False, f"{path}: stopped after {written} bytes: {error_text(exc)}")
    else:
        report(name, True, f"{path}: wrote {written} bytes (the cap of this test)")
"""

#: Build requirements that are direct URLs, not names on the index: one to a
#: server on loopback (the test's listener), one to a wheel on the host that
#: holds a secret (a file:// URL).  The backend asks for them from
#: get_requires_for_build_wheel (so the fetch phase is asked to get them), and
#: each time it is imported looks for what they brought: installed, or lying
#: in any directory it can see (the fetched files are shown to the build).
#: The fetch phase must take build requirements from the upstream index only.
URL_REQUIRES = """\
import zipfile


def _payload(module):
    try:
        return __import__(module).SECRET, "installed"
    except ImportError:
        pass
    for top in ("/tmp", os.getcwd()):
        for root, dirs, files in os.walk(top):
            if root.count(os.sep) - top.count(os.sep) >= 3:
                dirs[:] = []
            for name in files:
                if name.startswith(module) and name.endswith(".whl"):
                    try:
                        with zipfile.ZipFile(os.path.join(root, name)) as wheel:
                            text = wheel.read(module + ".py").decode()
                    except (OSError, KeyError, zipfile.BadZipFile):
                        continue
                    return text.strip(), os.path.join(root, name)
    return None, None


for target, module in (("loopback url", "piw_evil_payload"), ("file url", "piw_secret_payload")):
    found, where = _payload(module)
    report(target, found is not None,
           f"{module}: {where}: {found!r}" if found is not None else f"{module}: not here")


def get_requires_for_build_wheel(config_settings=None):
    return CONFIG["requires"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise SystemExit("hostile sdist: the url-requires attack makes no wheel")
"""

#: Attacks whose code defines the backend's hooks (the build goes on after
#: the attack), rather than failing the build when it is over.
HOOK_ATTACKS = ("url-requires",)

ATTACKS: dict[str, str] = {
    "connect": CONNECT,
    "secrets": SECRETS,
    "writes": WRITES,
    "fork-bomb": FORK_BOMB,
    "escapee": ESCAPEE,
    "disk-filler": DISK_FILLER,
    "url-requires": URL_REQUIRES,
}

# --- traps in the wheel directory ----------------------------------------------------
# These builds succeed: their backend makes a genuine wheel, and beside it, in
# the wheel directory pip was given (what the slave is handed out of the
# sandbox after the build), a file that would trap a careless reader: a FIFO (a read that
# never ends), a symlink to /dev/zero (bytes that never end), a sparse file
# far larger than any wheel, a symlink to one of the slave's secrets.  The
# slave must neither hang on them nor send what they point to.

#: The trap each trap sdist sets; "none" builds a genuine wheel only.
WHEEL_TRAPS = ("fifo", "dev-zero", "sparse", "secret-link", "none")
#: How large the sparse file claims to be.
SPARSE_BYTES = 64 * 2**30

WHEEL_TRAP = WHEEL_DIRS + """
import base64
import hashlib
import zipfile

_NAME = CONFIG["name"]
_DIST = _NAME.replace("-", "_")


def _set_trap(directory):
    trick = CONFIG["trick"]
    path = os.path.join(directory, f"{_DIST}-1.0-py30-none-any.whl")
    try:
        if trick == "fifo":
            os.mkfifo(path)
        elif trick == "dev-zero":
            os.symlink("/dev/zero", path)
        elif trick == "sparse":
            with open(path, "wb") as f:
                f.truncate(CONFIG["sparse_bytes"])
        elif trick == "secret-link":
            os.symlink(CONFIG["secret_path"], path)
        else:
            return
    except FileExistsError:
        return
    except OSError as exc:
        report(trick, False, f"{path}: {error_text(exc)}")
        return
    report(trick, True, f"set {path}")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dirs = wheel_dirs()
    if CONFIG["trick"] != "none":
        report("wheel dir", bool(dirs), f"pip's wheel dirs: {dirs}")
    for directory in dirs:
        _set_trap(directory)
    filename = f"{_DIST}-1.0-py3-none-any.whl"
    info = f"{_DIST}-1.0.dist-info"
    members = {
        f"{_DIST}.py": b"ANSWER = 42\\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: {_NAME}\\nVersion: 1.0\\n".encode(),
        f"{info}/WHEEL": (b"Wheel-Version: 1.0\\nGenerator: piwheels-tests\\n"
                          b"Root-Is-Purelib: true\\nTag: py3-none-any\\n"),
    }
    record = "".join(
        f"{name},sha256="
        f"{base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\\n" for name, data in members.items()) + f"{info}/RECORD,,\\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError("these sdists are made by the tests")
"""


def make_wheel_trap_sdist(dest_dir: Path, trick: str, config: Mapping[str, Any], *,
                          version: str = "1.0") -> Path:
    """Write the sdist of project ``hostile-wheel-<trick>``, whose build succeeds and
    sets *trick* in pip's wheel directory (see :data:`WHEEL_TRAPS`)."""
    if trick not in WHEEL_TRAPS:
        raise ValueError(f"unknown trick {trick!r}; known: {WHEEL_TRAPS}")
    name = wheel_trap_name(trick)
    settings = {**config, "trick": trick, "name": name, "sparse_bytes": SPARSE_BYTES}
    code = (_PRELUDE.format(attack=f"wheel-{trick}", config=json.dumps(settings))
            + "\n" + WHEEL_TRAP)
    stem = f"{name.replace('-', '_')}-{version}"
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    return write_sdist(dest_dir, stem, {"pyproject.toml": _BACKEND_PYPROJECT.format(requires="[]"),
                                        "hostile_backend.py": code, "PKG-INFO": pkg_info})


def wheel_trap_name(trick: str) -> str:
    """The project of a trap sdist (with no trap: a plain in-tree backend project)."""
    return "piw-in-tree-backend" if trick == "none" else f"{NAME_PREFIX}wheel-{trick}"


_BACKEND_PYPROJECT = """\
[build-system]
requires = {requires}
build-backend = "hostile_backend"
backend-path = ["."]
"""

_SETUPTOOLS_PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
"""


def attack_code(attack: str, config: Mapping[str, Any]) -> str:
    """The whole build code of *attack*: prelude, the attack, then a failed build
    (or, for :data:`HOOK_ATTACKS`, the hooks the attack defines)."""
    return (_PRELUDE.format(attack=attack, config=json.dumps(dict(config)))
            + "\n" + textwrap.dedent(ATTACKS[attack]) + "\n"
            + ("" if attack in HOOK_ATTACKS else _EPILOGUE))


def make_hostile_sdist(dest_dir: Path, attack: str, config: Mapping[str, Any], *,
                       version: str = "1.0", via: str = "backend",
                       requires: Sequence[str] = ()) -> Path:
    """Write the sdist of project ``hostile-<attack>`` *version*; returns its path.

    *via* is ``"backend"`` (the code is an in-tree PEP 517 backend) or
    ``"setup.py"`` (the code is a setuptools project's ``setup.py``).
    *requires* are the backend's build requirements (``"backend"`` only).
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {sorted(ATTACKS)}")
    name = NAME_PREFIX + attack
    stem = f"{name.replace('-', '_')}-{version}"
    code = attack_code(attack, config)
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if via == "backend":
        files = {"pyproject.toml": _BACKEND_PYPROJECT.format(requires=json.dumps(list(requires))),
                 "hostile_backend.py": code}
    elif via == "setup.py":
        files = {"pyproject.toml": _SETUPTOOLS_PYPROJECT, "setup.py": code}
    else:
        raise ValueError(f"via must be 'backend' or 'setup.py', not {via!r}")
    return write_sdist(dest_dir, stem, {**files, "PKG-INFO": pkg_info})


def payload_wheel(dest_dir: Path, module: str, secret: str) -> Path:
    """A wheel of project *module* holding ``module.SECRET = secret``, stored
    uncompressed (the secret's bytes are in the file as they are)."""
    name = module.replace("_", "-")
    path = dest_dir / f"{module}-1.0-py3-none-any.whl"
    info = f"{module}-1.0.dist-info"
    members = {
        f"{module}.py": f"SECRET = {secret!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: piwheels-tests\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(
        f"{member},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for member, data in members.items()) + f"{info}/RECORD,,\n"
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


@dataclass(frozen=True)
class Report:
    """One step an attack reported."""

    attack: str
    target: str
    managed: bool
    detail: str


_LINE = re.compile(
    rf"^[ \t]*{REPORT_WORD} (?P<attack>[\w-]+)/(?P<target>[^:]+): (?P<word>MANAGED|blocked): "
    rf"(?P<detail>.*)$", re.MULTILINE)


def parse_reports(log: str) -> dict[str, Report]:
    """The steps reported in a build *log*, by target."""
    return {
        match["target"]: Report(match["attack"], match["target"], match["word"] == "MANAGED",
                                match["detail"].strip())
        for match in _LINE.finditer(log)
    }


def attack_started(log: str, attack: str) -> bool:
    return re.search(rf"^[ \t]*{REPORT_WORD} {re.escape(attack)} started", log, re.MULTILINE) is not None


def attack_finished(log: str, attack: str) -> bool:
    return re.search(rf"^[ \t]*{REPORT_WORD} {re.escape(attack)} finished", log, re.MULTILINE) is not None


def describe(reports: Mapping[str, Report], target: Optional[str] = None) -> str:
    """The reports (or one) as lines, for a failing assertion's message."""
    chosen = [reports[target]] if target is not None and target in reports else reports.values()
    return "\n".join(f"{r.attack}/{r.target}: {'MANAGED' if r.managed else 'blocked'}: "
                     f"{r.detail}" for r in chosen) or "(no report)"
