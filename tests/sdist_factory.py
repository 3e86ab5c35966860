"""Small, real source distributions for build tests.

Each sdist is a ``.tar.gz`` with a plain setuptools ``setup.py`` and a
``pyproject.toml`` that names setuptools as the build backend, so pip builds it
in an isolated environment exactly as it builds a release from the upstream
index.  ``setup_body`` is Python inserted at the top of ``setup.py``: it runs
inside the build, which lets a test make a build hang, fork, allocate or talk.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from packaging.utils import canonicalize_name

PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
"""

SETUP_PY = """\
{setup_body}
from setuptools import setup{ext_import}

setup(
    name={name!r},
    version={version!r},
    description="A package made by the piwheels tests",
    {module_arg},{requires_python_arg}{requires_arg}{options_arg}
)
"""

C_SOURCE = """\
#define PY_SSIZE_T_CLEAN
{limited_api}#include <Python.h>
#include <math.h>

/* cbrt comes from libm, so the module links to a system library. */
static PyObject *answer(PyObject *self, PyObject *args)
{{
    volatile double cube = 74088.0;
    return PyLong_FromLong((long)round(cbrt(cube)));
}}

static PyMethodDef methods[] = {{
    {{"answer", answer, METH_NOARGS, "The answer."}},
    {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef module = {{
    PyModuleDef_HEAD_INIT, "{module}", NULL, -1, methods
}};

PyMODINIT_FUNC PyInit_{module}(void)
{{
    return PyModule_Create(&module);
}}
"""


#: The oldest CPython an ``abi3`` factory wheel runs on (its tag: cp39-abi3).
ABI3_MINIMUM = (3, 9)


def module_name(name: str) -> str:
    """The importable module a factory sdist of project *name* holds."""
    return canonicalize_name(name).replace("-", "_")


def make_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    kind: str = "pure",
    setup_body: str = "",
    requires_python: Optional[str] = None,
    declared_version: Optional[str] = None,
    requires: Sequence[str] = (),
    data_bytes: int = 0,
) -> Path:
    """Write ``<name>-<version>.tar.gz`` into *dest_dir* and return its path.

    *kind* is ``"pure"`` (one Python module), ``"c_ext"`` (one C extension
    module linked to libm, so the wheel is specific to the interpreter and
    platform and depends on a system library) or ``"abi3"`` (the same module
    built against the stable ABI of CPython 3.9, so one wheel tagged
    ``cp39-abi3`` serves every CPython from 3.9 on).
    *declared_version* is the version ``setup.py`` claims (default *version*),
    for sdists whose metadata disagrees with their file name.  *requires*
    become the wheel's Requires-Dist.  *data_bytes* adds a data file of that
    many random (incompressible) bytes, for a large wheel.
    """
    if kind not in ("pure", "c_ext", "abi3"):
        raise ValueError(f"kind must be 'pure', 'c_ext' or 'abi3', not {kind!r}")
    module = module_name(name)
    stem = f"{module}-{version}"
    if kind == "pure":
        module_arg = f"py_modules=[{module!r}]"
        ext_import = ""
        sources = {f"{module}.py": '"""Made by the piwheels tests."""\n\nANSWER = 42\n'}
    else:
        limited = kind == "abi3"
        hex_version = "0x{:02x}{:02x}0000".format(*ABI3_MINIMUM)
        module_arg = (f"ext_modules=[Extension({module!r}, sources=[{module + '.c'!r}], "
                      f"libraries=['m']{', py_limited_api=True' if limited else ''})]")
        ext_import = ", Extension"
        sources = {f"{module}.c": C_SOURCE.format(
            module=module,
            limited_api=f"#define Py_LIMITED_API {hex_version}\n" if limited else "")}
    options_arg = ""
    if kind == "abi3":
        tag = "cp{}{}".format(*ABI3_MINIMUM)
        options_arg = f"\n    options={{'bdist_wheel': {{'py_limited_api': {tag!r}}}}},"
    requires_python_arg = (
        f"\n    python_requires={requires_python!r}," if requires_python is not None else ""
    )
    requires_arg = f"\n    install_requires={list(requires)!r}," if requires else ""
    blob: dict[str, bytes] = {}
    if data_bytes:
        blob["blob.bin"] = os.urandom(data_bytes)
        requires_arg += f"\n    data_files=[('share/{module}', ['blob.bin'])],"
    declared = declared_version or version
    files = {
        "pyproject.toml": PYPROJECT,
        "setup.py": SETUP_PY.format(
            setup_body=textwrap.dedent(setup_body), ext_import=ext_import, name=name,
            version=declared, module_arg=module_arg, requires_python_arg=requires_python_arg,
            requires_arg=requires_arg, options_arg=options_arg,
        ),
        "PKG-INFO": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {declared}\n"
            + (f"Requires-Python: {requires_python}\n" if requires_python else "")
        ),
        **sources,
    }
    return write_sdist(dest_dir, stem, {**files, **blob})


def write_sdist(dest_dir: Path, stem: str, files: Mapping[str, Union[str, bytes]]) -> Path:
    """Write ``<stem>.tar.gz`` into *dest_dir* holding *files* (relative path: text
    or bytes) under the top directory *stem*, as every sdist has; returns its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{stem}.tar.gz"
    now = int(time.time())
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            info = tarfile.TarInfo(f"{stem}/{rel}")
            info.size = len(data)
            info.mtime = now
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def build_wheels(sdists: Sequence[Path], wheel_dir: Path, home: Path) -> Path:
    """Build *sdists* into *wheel_dir* with this interpreter's pip, offline and
    with a scrubbed environment, as a slave would; returns *wheel_dir*."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LC_ALL": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull, "PYTHONDONTWRITEBYTECODE": "1",
    }
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet",
         "--wheel-dir", str(wheel_dir), *map(str, sdists)],
        check=True, env=env, stdin=subprocess.DEVNULL, cwd=home, timeout=300,
    )
    return wheel_dir
