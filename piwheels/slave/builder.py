"""Running one build of one release in two phases, inside limits, and reading what it made.

A build runs arbitrary code from the upstream index, so it gets as little as
possible.  First the *fetch* phase, with the network, done by the slave
itself (:mod:`piwheels.slave.fetch`): the sdist, checked against the index's
sha256, and its build requirements as wheels; the backend's dynamic build
requirements are found by running its ``get_requires_for_build_wheel`` hook
offline in the sandbox, fetched, and the hook run again.  Then the *build*
phase: ``pip wheel`` with ``--no-index`` from what was fetched, in a
bubblewrap sandbox (:mod:`piwheels.slave.sandbox`) with no network, nothing
of the slave's, a process limit, an address-space limit, a disk quota and a
wall-clock timeout after which every process it started is killed.  Where
namespaces are not available the same commands run uncontained, and the
log header and HELLO say so.  Every command has stdin from /dev/null, an
environment built from nothing (no secrets of the slave, no host pip
configuration) and its own session.  Given the slave's
:class:`~piwheels.slave.work_area.WorkArea`, the builder also records the
build's processes while it runs and kills every descendant of the slave when
it ends (see :mod:`piwheels.slave.processes`).  Only the target is built from
source.  The shared cache (pip's HTTP cache) is written only by the fetch
phase; builds never see it.
"""

from __future__ import annotations

import json
import stat
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

from packaging.requirements import InvalidRequirement, Requirement

from .. import limits
from ..config import OPTIONS
from ..debian_lookup import DebianLookup
from ..errors import ConfigError, FetchError, InvalidName, InvalidVersion, WheelError
from ..names import canonical_name, normal_version
from ..smoke import SmokeResult
from ..wheel_facts import WheelFacts, check_identity, inspect_wheel
from . import hand_out, processes, sandbox
from .image import builder_image
from .build_log import (
    BoundedLog, MiB, clip, failure_reason, fetch_failure, note, redact_url,
)
from .build_run import HAND_OUT_NAME, BuildRun, scrubbed_env
from .fetch import (
    Fetcher, FetchStopped, WheelCache, build_system, download_wheels_command, source_date_epoch,
)
from .requires_probe import MARKER as PROBE_MARKER
from .smoke_test import smoke_test
from .work_area import WorkArea, remove_tree

log = logging.getLogger("piwheels.slave.builder")

Clock = Callable[[], float]

#: How long asking the build interpreter about itself may take.
PROBE_TIMEOUT_S = 60.0
#: How many times the dynamic build requirements are fetched and the hook asked again.
MAX_REQUIRES_ROUNDS = 3
#: pip's words when it could not install what the backend's get_requires_for_build_wheel named.
BACKEND_DEPENDENCIES_SIGN = "Installing backend dependencies: finished with status 'error'"
#: The build dir's scratch directories, removed as soon as the build ends (the wheels stay).
SCRATCH_DIRS = ("input", "home", "tmp", "work")
#: The file (beside this module) copied into each build to run the hook.
PROBE_NAME = "requires_probe.py"
#: The bubblewrap program unless the slave is told otherwise.
DEFAULT_BWRAP = OPTIONS["bwrap"].default
#: How long the smoke test of one wheel may take unless the slave is told otherwise.
DEFAULT_SMOKE_TIMEOUT_S = OPTIONS["smoke_timeout_s"].default
#: The Debian lookup's cache, in the slave's cache dir.
DEBIAN_CACHE_NAME = "debian-lookup.json"

# Runs in the build interpreter: the facts HELLO reports.  pip is certain to be
# there (it runs the builds); its vendored packaging is the fallback.
_PROBE = """\
import json, os, platform, sys
try:
    from pip._vendor.packaging import tags
except ImportError:
    from packaging import tags
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(dist):
    try:
        return metadata.version(dist)
    except Exception:
        return "none"
every = list(tags.sys_tags())
first = every[0]
platforms = [t.platform for t in every if (t.interpreter, t.abi) == (first.interpreter, first.abi)]
# What a local build is tagged with: not a manylinux or musllinux tag (the
# order of platforms differs between packaging releases).
plain = [p for p in platforms if not p.startswith(("manylinux", "musllinux"))]
print(json.dumps({
    "python_tag": first.interpreter,
    "abi_tag": first.abi,
    "platform_tag": (plain or platforms)[-1],
    "python_version": platform.python_version(),
    # every platform it installs wheels for, most specific first, each once
    "platforms": list(dict.fromkeys(platforms)),
    "pip_version": version("pip"),
    "setuptools_version": version("setuptools"),
    # what a sandbox must show for this interpreter to run
    "prefixes": sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}),
}))
"""


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use."""

    timeout_s: float
    memory_bytes: int
    max_log_bytes: int
    #: processes a build may run at once (0: no limit)
    pid_limit: int
    #: the most a contained build may write (its tmpfs, and its wheels on the host)
    disk_bytes: int


@dataclass
class BuildResult:
    """The outcome of one build; its wheels stay on disk until :meth:`close`."""

    success: bool
    duration_s: float
    log: str
    reason: Optional[str]
    wheels: list[tuple[Path, WheelFacts]] = field(default_factory=list)
    build_dir: Optional[Path] = None
    #: the smoke test of each wheel (None: not tested, the slave runs without it)
    smoke: Optional[list[SmokeResult]] = None

    def close(self) -> None:
        """Remove the build's directory with its wheels (again: nothing happens)."""
        if self.build_dir is not None:
            remove_tree(self.build_dir)
            self.build_dir = None

    def __enter__(self) -> "BuildResult":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Builder:
    """Builds one release at a time: fetch, then ``pip wheel`` offline (see the module docstring).

    ``index_url`` may be changed between builds (the master names it in ACK).
    *bwrap* is the bubblewrap program; where it cannot make namespaces the
    builds run uncontained and say so.  *hidden* are host paths a contained
    build must never see (the slave's configuration and keys).
    """

    def __init__(self, *, python: str, index_url: str, work_dir: Path, cache_dir: Path,
                 limits: BuildLimits, clock: Clock = time.monotonic,
                 work_area: Optional[WorkArea] = None, bwrap: str = DEFAULT_BWRAP,
                 hidden: Sequence[Path] = (), smoke_test: bool = True,
                 smoke_timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S, image_salt: str = "") -> None:
        self.python = python
        self.image_salt = image_salt
        self.work_area = work_area
        self.index_url = index_url
        self.work_dir = Path(work_dir)
        self.cache_dir = Path(cache_dir)
        self.limits = limits
        self.clock = clock
        self.bwrap = bwrap
        self.hidden = tuple(str(p) for p in hidden)
        self.smoke_test = smoke_test
        self.smoke_timeout_s = smoke_timeout_s
        self.debian = DebianLookup(self.cache_dir / DEBIAN_CACHE_NAME)
        self._environment: Optional[dict[str, str]] = None
        self._sandbox: Optional[sandbox.Sandbox] = None
        self._environment_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below, shared with cancel()
        self._running = False
        self._cancelled = False
        self._proc: Optional[subprocess.Popen] = None
        self._wake = threading.Event()

    # --- the build interpreter and the sandbox -----------------------------------------

    def environment(self) -> dict[str, str]:
        """Facts about the build interpreter, host and containment, for HELLO and the log."""
        with self._environment_lock:
            if self._environment is None:
                facts, prefixes = self._probe()
                containment = sandbox.detect(self.bwrap)
                facts["containment"] = containment.description
                facts["image"] = builder_image(facts, self.image_salt)
                if containment.bwrap is not None:
                    self._sandbox = sandbox.Sandbox(
                        bwrap=containment.bwrap, readonly=tuple(prefixes),
                        hidden=self.hidden + (str(self.work_dir), str(self.cache_dir),
                                              os.path.expanduser("~")),
                        disk_bytes=self.limits.disk_bytes)
                self._environment = facts
            return dict(self._environment)

    @property
    def contained(self) -> bool:
        """Whether builds run in the sandbox (known once :meth:`environment` ran)."""
        self.environment()
        return self._sandbox is not None

    def _probe(self) -> tuple[dict[str, str], list[str]]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="piw-probe-", dir=self.work_dir) as tmp:
            try:
                probe = subprocess.run(
                    [self.python, "-I", "-c", _PROBE], stdin=subprocess.DEVNULL,
                    capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
                    cwd=tmp, env=scrubbed_env(Path(tmp), Path(tmp), Path(tmp), "probe"),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(f"cannot run the build interpreter {self.python}: {exc}") from None
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"the build interpreter {self.python} failed to describe itself: {last}")
        facts = json.loads(probe.stdout)
        prefixes = [str(p) for p in facts.pop("prefixes", [])]
        platforms = [str(p) for p in facts.pop("platforms", [])]
        facts["os"] = _os_name()
        described = {key: str(value) for key, value in facts.items()}
        described["platforms"] = platforms  # type: ignore[assignment]  (HELLO's list)
        return described, prefixes

    # --- building ---------------------------------------------------------------------

    def build(self, package: str, version: str) -> BuildResult:
        """Build *package* *version*; blocks until it is built, failed, timed out or cancelled."""
        with self._lock:
            if self._running:
                raise RuntimeError("this builder is already running a build")
            self._running = True
            self._cancelled = False
            self._proc = None
            self._wake.clear()
        start_s = self.clock()
        build_dir: Optional[Path] = None
        result: Optional[BuildResult] = None
        try:
            self.environment()
            self.work_dir.mkdir(parents=True, exist_ok=True)
            build_dir = Path(tempfile.mkdtemp(prefix="piw-build-", dir=self.work_dir))
            result = self._build(package, version, build_dir, start_s)
            return result
        finally:
            if build_dir is not None and result is not None and result.success:
                for scratch in SCRATCH_DIRS:
                    remove_tree(build_dir / scratch)
            elif build_dir is not None:
                remove_tree(build_dir)
            with self._lock:
                self._running = False
                self._proc = None

    def cancel(self) -> None:
        """Kill the running build's processes now; :meth:`build` then reports "cancelled".

        Safe from any thread; with no build running it does nothing.
        """
        with self._lock:
            if not self._running:
                return
            self._cancelled = True
            if self._proc is not None:
                # The leader is not reaped while _proc is set, so its pid (the
                # group's id) cannot have been reused.
                processes.signal_group(self._proc.pid)
        self._wake.set()

    def _build(self, package: str, version: str, build_dir: Path, start_s: float) -> BuildResult:
        text = BoundedLog(self.limits.max_log_bytes)
        fetched: list[str] = []

        def finish(success: bool, reason: Optional[str],
                   wheels: Optional[list[tuple[Path, WheelFacts]]] = None,
                   smoke: Optional[list[SmokeResult]] = None) -> BuildResult:
            if success:
                names = ", ".join(facts.filename for _, facts in wheels or [])
                text.write(f"\n--- piwheels: built {names}\n".encode())
            else:
                text.write(f"\n--- piwheels: build failed: {reason}\n".encode())
            return BuildResult(
                success=success, duration_s=max(0.0, self.clock() - start_s), log=text.text(),
                reason=reason, wheels=wheels or [], build_dir=build_dir if success else None,
                smoke=smoke,
            )

        try:
            canonical_name(package)
            normal_version(version)
        except (InvalidName, InvalidVersion) as exc:
            return finish(False, str(exc))
        run = BuildRun(self, build_dir, text, start_s + self.limits.timeout_s)
        for directory in (run.input, run.wheels, *(build_dir / name for name in SCRATCH_DIRS)):
            directory.mkdir(exist_ok=True)
        shutil.copyfile(Path(__file__).with_name(PROBE_NAME), run.input / PROBE_NAME)
        shutil.copyfile(hand_out.__file__, run.input / HAND_OUT_NAME)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        text.write(self._header(package, version).encode("utf-8", "replace"))

        # fetch phase: the sdist, by the slave itself
        note(text, f"fetch phase (network): the sdist of {package} {version} from the index")
        fetcher = Fetcher(self.index_url)
        try:
            entry = fetcher.sdist(package, version)
            sdist = fetcher.download(entry, run.input, run.stopped)
            system = build_system(sdist)
            run.source_date_epoch = source_date_epoch(sdist)
        except FetchStopped as exc:
            return finish(False, str(exc))
        except FetchError as exc:
            return finish(False, clip(f"fetch phase: {exc}"))
        finally:
            fetcher.close()
        fetched.append(entry.filename)
        text.write(f"{entry.filename}: sha256 {entry.sha256} (as the index says)\n"
                   f"build backend: {system.backend}; requires: "
                   f"{', '.join(system.requires) or 'nothing'}\n"
                   f"SOURCE_DATE_EPOCH: {run.source_date_epoch} (the newest mtime in the sdist)\n"
                   .encode("utf-8", "replace"))
        requires = list(system.requires)
        for round_number in range(1, MAX_REQUIRES_ROUNDS + 1):
            deps = run.input / f"deps-{round_number}"
            deps.mkdir()
            if requires:
                failed = self._fetch_requirements(run, requires, deps)
                if failed is not None:
                    return finish(False, failed)
            got = fetched + sorted(path.name for path in deps.glob("*.whl"))

            # build phase: offline, contained
            note(text, "build phase (no network)" if self._sandbox is not None else
                 "build phase (pip --no-index, but UNCONTAINED: the network is reachable)")
            returncode, reason = run.contained([
                self.python, "-m", "pip", "wheel", f"{package}=={version}",
                "--no-deps", "--no-binary", package, "--no-index",
                "--find-links", str(run.layout.input),
                "--find-links", str(run.layout.input / deps.name),
                "--wheel-dir", str(run.layout.wheels), "--progress-bar", "off",
                "--disable-pip-version-check", "--no-input", "--verbose",
            ], hand_out=True)
            if reason is not None:
                return finish(False, reason)
            if returncode == 0:
                break
            output = run.output.text()
            failed = failure_reason(
                returncode, output, memory_bytes=self.limits.memory_bytes,
                pid_limit=self.limits.pid_limit, disk_bytes=self.limits.disk_bytes,
                contained=self._sandbox is not None, fetched=got)
            if BACKEND_DEPENDENCIES_SIGN not in output:
                return finish(False, failed)
            if round_number == MAX_REQUIRES_ROUNDS:
                return finish(False, f"the sdist's dynamic build requirements did not settle "
                                     f"after {MAX_REQUIRES_ROUNDS} rounds of fetching")
            # pip could not install what get_requires_for_build_wheel named:
            # ask the hook ourselves, offline, and fetch what it wants
            note(text, "probe (no network): get_requires_for_build_wheel")
            returncode, reason = run.contained([
                self.python, "-I", str(run.layout.input / PROBE_NAME),
                str(run.layout.input / sdist.name), json.dumps(system.to_dict()),
                str(run.layout.input / deps.name), str(run.layout.work)])
            if reason is not None:
                return finish(False, reason)
            answer = _probe_answer(run.output.text()) if returncode == 0 else None
            new = [r for r in answer[1] if r not in requires] if answer is not None else []
            if not new:
                return finish(False, failed)
            requires += new
        wheels = []
        for path in sorted(run.wheels.glob("*.whl")):
            if not stat.S_ISREG(path.lstat().st_mode):
                # a FIFO or a link to /dev/zero would hang the slave, a link could
                # point at its secrets: the build left it there, not pip
                return finish(False, clip(f"the build left {path.name} in its wheel "
                                          "directory, which is not a regular file"))
            try:
                facts = inspect_wheel(path)
                check_identity(facts, package=package, version=version)
            except WheelError as exc:
                return finish(False, clip(f"pip made an unacceptable wheel: {exc}"))
            wheels.append((path, facts))
        if not wheels:
            return finish(False, "pip reported success but made no wheel")
        if not self.smoke_test:
            note(text, "smoke test: not run (--no-smoke-test)")
            return finish(True, None, wheels)
        smoke = smoke_test(run, wheels, timeout_s=self.smoke_timeout_s, lookup=self.debian)
        stopped = run.stopped()  # cancelled or out of time during the test
        if stopped is not None:
            return finish(False, stopped)
        return finish(True, None, wheels, smoke)

    def _fetch_requirements(self, run: BuildRun, requires: list[str], deps: Path) -> Optional[str]:
        """Fetch *requires* as wheels into *deps* (or reuse a recent set); why not, if it failed."""
        cache = WheelCache(self.cache_dir)
        key = cache.key(self.python, self.index_url, requires)
        reused = cache.get(key, deps, time.time())
        if reused is not None:
            note(run.text, f"fetch phase: the build requirements {', '.join(requires)}, "
                           f"as fetched lately: {', '.join(reused)}")
            return None
        for text in requires:
            try:
                direct = Requirement(text).url is not None
            except InvalidRequirement:
                return clip(f"fetch phase: the build requirement {text!r} is not valid")
            if direct:
                return clip(f"fetch phase: the build requirement {text!r} is a URL; build "
                            "requirements come from the index only")
        note(run.text, "fetch phase (network): the build requirements, as wheels")
        returncode, reason = run.fetch(download_wheels_command(
            self.python, requires, deps, self.index_url, self.cache_dir))
        if reason is not None:
            return reason
        if returncode != 0:
            return fetch_failure(returncode, run.output.text())
        cache.put(key, sorted(deps.glob("*.whl")))
        return None

    def _header(self, package: str, version: str) -> str:
        env = self.environment()
        memory = self.limits.memory_bytes
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self._sandbox is not None:
            containment = (
                f"{env['containment']}: new user, network (loopback only), mount, PID and "
                f"IPC namespaces; read-only system, private /tmp; build dir quota "
                f"{self.limits.disk_bytes // MiB} MiB")
        else:
            containment = (f"{env['containment']}; builds run UNCONTAINED (network, "
                           "files and processes of this user are reachable)")
        return (
            f"piwheels build of {package} {version}, started {started}\n"
            f"python: {self.python} ({env['python_version']}, "
            f"{env['python_tag']}-{env['abi_tag']}-{env['platform_tag']})\n"
            f"pip: {env['pip_version']}; setuptools: {env['setuptools_version']}\n"
            f"os: {env['os']}\n"
            f"index: {redact_url(self.index_url)}\n"
            f"containment: {containment}\n"
            f"phases: fetch (network, by the slave: the sdist, checked against the index's "
            f"sha256, and its build requirements as wheels), then build (no network)\n"
            f"reproducible: SOURCE_DATE_EPOCH is the newest mtime in the sdist (below)\n"
            f"limits: {self.limits.timeout_s:g} s, "
            f"memory {f'{memory // MiB} MiB' if memory > 0 else 'unlimited'}, "
            f"{self.limits.pid_limit} processes, log {self.limits.max_log_bytes} bytes\n"
            f"---\n"
        )

def _probe_answer(output: str) -> Optional[tuple[list[str], list[str]]]:
    """(requirements, missing ones) from the probe's last answer line; None if it gave none."""
    for line in reversed(output.splitlines()):
        if line.startswith(PROBE_MARKER):
            try:
                answer = json.loads(line[len(PROBE_MARKER):])
                wanted = [str(Requirement(str(r))) for r in answer["requires"]]
                missing = [str(Requirement(str(r))) for r in answer["missing"]]
            except (ValueError, KeyError, TypeError, InvalidRequirement):
                return None
            return wanted, missing
    return None


def _os_name() -> str:
    """The host's OS release as a target may be pinned to it: "Debian 12" (os-release's
    ID and VERSION_ID), else its PRETTY_NAME, else what the platform module says."""
    return os_release_name(_read_os_release())


def _read_os_release() -> dict[str, str]:
    try:
        return platform.freedesktop_os_release()
    except OSError:
        return {}


def os_release_name(info: dict[str, str]) -> str:
    """"Debian 12" from an os-release's fields (:func:`platform.freedesktop_os_release`)."""
    name, version = info.get("ID", "").strip(), info.get("VERSION_ID", "").strip()
    if name and version:
        return f"{name.capitalize()} {version}"[:limits.OS_RELEASE]
    pretty = info.get("PRETTY_NAME", "").strip()
    return (pretty or platform.platform())[:limits.OS_RELEASE]


