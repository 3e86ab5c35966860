"""Sdists that fail to build for real, one for each cause a build here can meet.

Each :class:`FailingSdist` has a project name, the :class:`~piwheels.diagnosis.Diagnosis`
cause and want that :func:`~piwheels.diagnosis.diagnose` must find in the log of
its build, and :meth:`FailingSdist.make`, which writes it (with
:func:`sdist_factory.write_sdist`).  The failures are real: a C extension that
includes a header this builder lacks, links a library it lacks, ``setup.py``
asking ``pkg-config`` for a module or running a program as real projects do
(mysqlclient, pycurl), a maturin project on a builder without cargo, a
Requires-Python no interpreter meets, files missing from the sdist, metadata
that disagrees with the file name, a compiler flag gcc 12 does not know, and
a build that runs out of its memory limit.

The wants are real Debian ones (``lber.h`` is libldap-dev's, ``-lsasl2``
libsasl2-dev's...): a builder with those packages installed builds these.
:func:`missing_on_this_host` says which cannot fail here.  End-to-end tests
serve them from a fake index (the maturin one needs maturin among the
backends, see :data:`fake_index.BACKEND_PROJECTS`; through a slave it fails in
the fetch phase, as maturin asks for puccinialin, its installer of Rust); the
out-of-memory one needs the slave's memory limit (:attr:`FailingSdist.memory_bytes`);
the Requires-Python one is for the skip rules as much as for the diagnosis.
:meth:`FailingSdist.expects` says whether a diagnosis is the one meant.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from sdist_factory import PYPROJECT, module_name, write_sdist

from piwheels.diagnosis import Diagnosis, Wanted

#: The PATH builds run with: a slave's scrubbed one (no ~/.cargo/bin).
BUILD_PATH = "/usr/local/bin:/usr/bin:/bin"
#: How long one build may take here.
BUILD_TIMEOUT_S = 120.0

#: ``setup.py`` of a C extension; ``{extra}`` goes into the Extension(...).
EXT_SETUP = """\
from setuptools import setup, Extension

setup(
    name={name!r},
    version={version!r},
    ext_modules=[Extension({module!r}, sources=[{source!r}]{extra})],
)
"""

EXT_SOURCE = """\
#include <Python.h>
{include}
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{module}", NULL, -1, NULL}};
PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&module); }}
"""

#: ``setup.py`` that runs real code before setup(): ``{body}``.
BODY_SETUP = """\
{body}
from setuptools import setup

setup(name={name!r}, version={version!r}, py_modules=[{module!r}]{extra})
"""

#: What mysqlclient's setup does to find its flags (its own words).
PKG_CONFIG_BODY = """\
import subprocess
for pkg in ["mysqlclient", "mariadb", "libmariadb", "perconaserverclient"]:
    try:
        cmd = f"pkg-config --exists {pkg}"
        print(f"Trying {cmd}")
        subprocess.check_call(cmd, shell=True)
    except subprocess.CalledProcessError as err:
        print(err)
    else:
        break
else:
    raise Exception(
        "Can not find valid pkg-config name.\\n"
        "Specify MYSQLCLIENT_CFLAGS and MYSQLCLIENT_LDFLAGS env vars manually"
    )
"""

#: What pycurl's setup does to find libcurl (its own words).
PROGRAM_BODY = """\
import subprocess
try:
    p = subprocess.Popen(["curl-config", "--version"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
except OSError as exc:
    raise SystemExit("Could not run curl-config: %s" % exc)
"""

README_BODY = """\
with open("README.md") as readme:
    long_description = readme.read()
"""

MEMORY_BODY = """\
hog = bytearray(4 * 1024 ** 3)
"""

MATURIN_PYPROJECT = """\
[build-system]
requires = ["maturin>=1,<2"]
build-backend = "maturin"

[project]
name = "{name}"
version = "{version}"
"""

CARGO_TOML = """\
[package]
name = "{module}"
version = "{version}.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]
"""


@dataclass(frozen=True)
class FailingSdist:
    """An sdist whose build fails with *cause* (and *wanted*)."""

    name: str
    cause: str
    wanted: Optional[Wanted]
    #: the version in the file name
    version: str = "1.0"
    #: what the build must lack for it to fail: a program, a path (a glob), or
    #: ``pkg-config:MODULE``
    needs_absent: tuple[str, ...] = ()
    #: RLIMIT_AS for the build, if it fails by running out of it
    memory_bytes: int = 0
    #: this needs build isolation (a backend the test venv lacks: maturin)
    isolated: bool = False
    files: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def expects(self, diagnosis: Diagnosis) -> bool:
        """Whether *diagnosis* (of this sdist's failed build) is the one meant."""
        return (diagnosis.cause, diagnosis.wanted) == (self.cause, self.wanted)

    @property
    def module(self) -> str:
        return module_name(self.name)

    @property
    def stem(self) -> str:
        return f"{self.module}-{self.version}"

    def make(self, dest_dir: Path) -> Path:
        """Write ``<module>-<version>.tar.gz`` into *dest_dir*; its path."""
        return write_sdist(dest_dir, self.stem, self.files)


def _ext(name: str, *, include: str = "", extra: str = "", source: Optional[str] = None,
         write_source: bool = True) -> dict[str, str]:
    module = module_name(name)
    source = source or f"{module}.c"
    files = {
        "pyproject.toml": PYPROJECT,
        "setup.py": EXT_SETUP.format(name=name, version="1.0", module=module,
                                     source=source, extra=extra),
    }
    if write_source:
        files[source] = EXT_SOURCE.format(include=include, module=module)
    return files


def _body(name: str, body: str, *, version: str = "1.0", extra: str = "",
          module_file: bool = True) -> dict[str, str]:
    module = module_name(name)
    files = {
        "pyproject.toml": PYPROJECT,
        "setup.py": BODY_SETUP.format(body=textwrap.dedent(body), name=name, version=version,
                                      module=module, extra=extra),
    }
    if module_file:
        files[f"{module}.py"] = "ANSWER = 42\n"
    return files


def _maturin(name: str) -> dict[str, str]:
    module = module_name(name)
    return {
        "pyproject.toml": MATURIN_PYPROJECT.format(name=name, version="1.0"),
        "Cargo.toml": CARGO_TOML.format(module=module, version="1.0"),
        "src/lib.rs": "",
    }


#: Every failing sdist, by name.
FAILING_SDISTS: dict[str, FailingSdist] = {sdist.name: sdist for sdist in (
    FailingSdist("fail-header", "missing-header", Wanted("header", "lber.h"),
                 needs_absent=("/usr/include/lber.h",),
                 files=_ext("fail-header", include="#include <lber.h>")),
    FailingSdist("fail-library", "missing-library", Wanted("library", "sasl2"),
                 needs_absent=("/usr/lib/*/libsasl2.so", "/usr/lib/libsasl2.so"),
                 files=_ext("fail-library", extra=", libraries=['sasl2']")),
    FailingSdist("fail-pkg-config", "missing-pkg-config", Wanted("pkg-config", "mysqlclient"),
                 needs_absent=("pkg-config:mysqlclient",),
                 files=_body("fail-pkg-config", PKG_CONFIG_BODY)),
    FailingSdist("fail-program", "missing-program", Wanted("program", "curl-config"),
                 needs_absent=("curl-config",),
                 files=_body("fail-program", PROGRAM_BODY)),
    FailingSdist("fail-rust", "needs-rust", Wanted("program", "cargo"),
                 needs_absent=("cargo",), isolated=True, files=_maturin("fail-rust")),
    FailingSdist("fail-compiler", "needs-newer-compiler", None,
                 files=_ext("fail-compiler", extra=", extra_compile_args=['-std=c23']")),
    FailingSdist("fail-python", "needs-newer-python", None,
                 files=_body("fail-python", "", extra=", python_requires='>=3.99'")),
    FailingSdist("fail-missing-file", "broken-sdist", None,
                 files=_body("fail-missing-file", README_BODY,
                             extra=", long_description=long_description")),
    FailingSdist("fail-missing-source", "broken-sdist", None,
                 files=_ext("fail-missing-source", source="src/fail_missing_source.c",
                            write_source=False)),
    FailingSdist("fail-inconsistent", "broken-sdist", None,
                 files=_body("fail-inconsistent", "", version="1.1")),
    FailingSdist("fail-memory", "out-of-memory", None, memory_bytes=1024 ** 3,
                 files=_body("fail-memory", MEMORY_BODY)),
)}


def missing_on_this_host(sdist: FailingSdist) -> list[str]:
    """What of that *sdist* must lack this host has (empty: it fails here as meant)."""
    present = []
    for thing in sdist.needs_absent:
        if thing.startswith("pkg-config:"):
            module = thing.split(":", 1)[1]
            asked = subprocess.run(["pkg-config", "--exists", module], check=False,
                                   stdin=subprocess.DEVNULL, capture_output=True)
            if asked.returncode == 0:
                present.append(thing)
        elif thing.startswith("/"):
            present.extend(str(path) for path in Path("/").glob(thing[1:]))
        elif shutil.which(thing, path=BUILD_PATH):
            present.append(thing)
    return present


def build_log(sdist: FailingSdist, work: Path, find_links: Sequence[Path] = (),
              python: str = sys.executable) -> tuple[int, str]:
    """Build *sdist* with real ``pip wheel`` as a slave asks it (``name==version`` from
    a local directory, offline, ``--verbose``); its exit status and output.

    Without build isolation (*python*'s setuptools) unless the sdist needs
    another backend: then from *find_links* (the backend wheels).
    """
    (work / "home").mkdir(parents=True, exist_ok=True)
    sdist.make(work / "input")
    env = {
        "PATH": BUILD_PATH, "HOME": str(work / "home"), "LC_ALL": "C.UTF-8",
        "PIP_CONFIG_FILE": "/dev/null", "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    command = [
        python, "-m", "pip", "wheel", f"{sdist.name}=={sdist.version}",
        "--no-deps", "--no-binary", sdist.name, "--no-index", "--no-cache-dir",
        "--find-links", str(work / "input"),
        *(arg for link in find_links for arg in ("--find-links", str(link))),
        "--wheel-dir", str(work / "wheels"), "--progress-bar", "off", "--no-input", "--verbose",
    ]
    if not sdist.isolated:
        command.append("--no-build-isolation")

    def limit() -> None:
        if sdist.memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (sdist.memory_bytes, sdist.memory_bytes))

    done = subprocess.run(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", timeout=BUILD_TIMEOUT_S, preexec_fn=limit)
    return done.returncode, done.stdout
