"""Build interpreters that honestly present another platform (this machine has no ARM CPU).

CPython answers ``sysconfig.get_platform()`` from ``_PYTHON_HOST_PLATFORM``
when it is set (the variable cross builds use), and everything that tags a
wheel asks that: :mod:`packaging.tags` (``sys_tags()`` then gives
``linux_aarch64``), pip's vendored copy of it, and setuptools' ``bdist_wheel``,
which names a C extension's wheel ``...-linux_aarch64.whl``.

A slave's builds run with an environment made from nothing, in a sandbox, so
a variable set around ``piw-slave`` never reaches them.  The interpreter
sets it itself instead: :func:`foreign_python` makes a venv of a pyenv CPython
(``--system-site-packages``, so pip is the base interpreter's and the venv
costs no download) with a ``.pth`` file in its site-packages, which ``site``
runs at every start-up, even under ``-I``.  Every process the interpreter
starts inherits the variable: pip's isolated build subprocesses, the build
backend, the smoke test's venv.  Pass the venv's ``bin/python`` to
``piw-slave --python``.

What stays native is the code: the extension is an x86-64 ELF under an ARM
name, which this machine imports fine (the smoke test passes).  The
platform tag is all the farm routes on, so that is what is foreign.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

#: The .pth file's name (site runs its ``import`` lines at start-up).
PTH_NAME = "piwheels_test_foreign_platform.pth"
#: The variable CPython's sysconfig takes the platform from.
HOST_PLATFORM_VARIABLE = "_PYTHON_HOST_PLATFORM"
#: sysconfig's spelling of the platforms the tests present (its "-", not the tag's "_").
AARCH64 = "linux-aarch64"
ARMV7L = "linux-armv7l"


def platform_tag(sysconfig_platform: str) -> str:
    """The wheel platform tag sysconfig's *sysconfig_platform* gives (as packaging.tags
    and bdist_wheel make it: ``linux-aarch64`` → ``linux_aarch64``)."""
    return sysconfig_platform.replace("-", "_").replace(".", "_")


def foreign_python(base_python: str, sysconfig_platform: str, where: Path, *,
                   owner: Optional[tuple[int, int]] = None) -> str:
    """A venv of *base_python* at *where* whose ``sysconfig.get_platform()`` is
    *sysconfig_platform* (e.g. :data:`AARCH64`); its interpreter's path.

    *owner* (uid, gid) gets the venv (a slave running as the build user must
    read it; the pyenv base is readable by all).  Made again if it exists.
    """
    subprocess.run([base_python, "-I", "-m", "venv", "--clear", "--without-pip",
                    "--system-site-packages", str(where)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60).stdout.strip()
    if not purelib.startswith(str(where)):
        raise RuntimeError(f"the venv's site-packages {purelib} is not under {where}")
    (Path(purelib) / PTH_NAME).write_text(
        f"import os; os.environ[{HOST_PLATFORM_VARIABLE!r}] = {sysconfig_platform!r}\n")
    for directory, _, files in os.walk(where):
        os.chmod(directory, 0o755)
        if owner is not None:
            os.chown(directory, *owner)
            for name in files:
                os.chown(os.path.join(directory, name), *owner, follow_symlinks=False)
    return str(python)
