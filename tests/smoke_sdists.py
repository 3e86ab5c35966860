"""Sdists whose wheels build and then pass, fail or cannot finish their smoke test.

Each case is a real setuptools sdist (:func:`sdist_factory.write_sdist`) with
what its smoke test must report: ``status``, words its detail must hold, and
the Debian package it must name (if any).

- ``missing-library``: a C extension linked against a shared library that the
  build makes itself, with the soname of a real Debian library that is not
  installed here (``libgeos_c.so.1``): present when the wheel is linked,
  absent when it is imported, as a ``-dev`` package on the builder without its
  runtime library on the user's machine would be.
- ``raises``: a module whose import raises.
- ``needs-dependency``: a module that imports a distribution it requires,
  which the smoke test (the wheel alone, offline) does not install.
- ``hangs``: a module whose import forks a child and sleeps forever: the smoke
  test's time limit must end both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sdist_factory import PYPROJECT, module_name, write_sdist

#: The soname the missing-library case links to, and the Debian package that ships it.
MISSING_SONAME = "libgeos_c.so.1"
MISSING_PACKAGE = "libgeos-c1v5"

SETUP_PY = """\
from setuptools import setup{ext_import}
{setup_body}
setup(
    name={name!r}, version={version!r}, description="A smoke test case",
    {module_arg},
    install_requires={requires!r},
)
"""

# The library is built by setup.py itself, into the source tree, with the
# soname of a real library; the extension calls into it, so the linker keeps it.
BUILD_LIBRARY = """
import os, subprocess
_here = os.path.dirname(os.path.abspath(__file__))
_lib = os.path.join(_here, "piwlib")
os.makedirs(_lib, exist_ok=True)
_so = os.path.join(_lib, {soname!r})
if not os.path.exists(_so):
    subprocess.check_call(["cc", "-shared", "-fPIC", "-Wl,-soname," + {soname!r},
                           "-o", _so, os.path.join(_here, "shim.c")])
_link = os.path.join(_lib, {link!r})
if not os.path.lexists(_link):
    os.symlink({soname!r}, _link)
"""

SHIM_C = "int piw_shim(void) { return 42; }\n"

EXTENSION_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
extern int piw_shim(void);
static PyObject *answer(PyObject *self, PyObject *args) {{ return PyLong_FromLong(piw_shim()); }}
static PyMethodDef methods[] = {{{{"answer", answer, METH_NOARGS, "The answer."}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{module}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&module); }}
"""

HANG_MODULE = '''\
"""Its import forks a child that lingers, then never returns."""
import os, time
if os.fork() == 0:
    os.execv("/bin/sleep", ["sleep", {token!r}])
time.sleep({token})
'''


@dataclass(frozen=True)
class SmokeCase:
    name: str
    status: str
    detail: str          # words the smoke test's detail must hold
    package: Optional[str] = None


CASES = {case.name: case for case in (
    SmokeCase("smoke-missing-library", "failed", f"{MISSING_SONAME}: cannot open shared object",
              MISSING_PACKAGE),
    SmokeCase("smoke-raises", "failed", "RuntimeError: this module refuses to be imported"),
    SmokeCase("smoke-needs-dependency", "incomplete", "needs piw_absent_dependency"),
    SmokeCase("smoke-passes", "passed", "imported smoke_passes"),
    SmokeCase("smoke-hangs", "failed", "did not finish within"),
)}


def make_smoke_sdist(dest_dir: Path, name: str, version: str = "1.0", *,
                     token: str = "86400") -> Path:
    """The sdist of case *name* (a key of :data:`CASES`); *token*: how long the
    ``hangs`` case's processes sleep (tests find them by it)."""
    module = module_name(name)
    files = {"pyproject.toml": PYPROJECT,
             "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
    requires: list[str] = []
    setup_body, ext_import = "", ""
    module_arg = f"py_modules=[{module!r}]"
    if name == "smoke-missing-library":
        link = MISSING_SONAME.split(".so")[0] + ".so"
        setup_body = BUILD_LIBRARY.format(soname=MISSING_SONAME, link=link)
        ext_import = ", Extension"
        library = MISSING_SONAME.split(".so")[0][len("lib"):]
        module_arg = (f"ext_modules=[Extension({module!r}, sources=[{module + '.c'!r}], "
                      f"libraries=[{library!r}], library_dirs=[_lib])]")
        files.update({f"{module}.c": EXTENSION_C.format(module=module), "shim.c": SHIM_C})
    elif name == "smoke-raises":
        files[f"{module}.py"] = 'raise RuntimeError("this module refuses to be imported")\n'
    elif name == "smoke-needs-dependency":
        requires = ["piw-absent-dependency"]
        files[f"{module}.py"] = "import piw_absent_dependency\n"
    elif name == "smoke-passes":
        files[f"{module}.py"] = "ANSWER = 42\n"
    elif name == "smoke-hangs":
        files[f"{module}.py"] = HANG_MODULE.format(token=token)
    else:
        raise ValueError(f"no smoke case {name!r}")
    files["setup.py"] = SETUP_PY.format(ext_import=ext_import, setup_body=setup_body,
                                        name=name, version=version, module_arg=module_arg,
                                        requires=requires)
    return write_sdist(dest_dir, f"{module}-{version}", files)
