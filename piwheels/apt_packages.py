"""The Debian packages a wheel's shared libraries need directly: ``readelf -d``
names each library's own ``DT_NEEDED`` entries, ``ldd`` says where the loader
finds those names (nothing else of its closure is kept), and ``dpkg -S`` which
package owns each.  Packages every Debian system has are left out, as are
libraries the wheel bundles.  Only a builder can ask this of its own system,
so what it finds is the builder's claim (see :mod:`piwheels.wheel_facts`); a
pure helper, no sockets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Optional

#: How long one ``readelf``, ``ldd``, ``dpkg -S`` or ``dpkg-query`` may take before the lookup gives up.
TOOL_TIMEOUT_S = 60.0

#: Packages on every system besides the Essential ones: the C library, and
#: libgcc-s1, which libc6 depends on.  (libstdc++6 is not: nothing Essential needs it.)
BASE_PACKAGES = frozenset({"libc6", "libgcc-s1"})

_TOOLS = ("readelf", "ldd", "dpkg", "dpkg-query")


def tools() -> Optional[tuple[str, ...]]:
    """The paths of ``readelf``, ``ldd``, ``dpkg`` and ``dpkg-query``, or None where any is missing."""
    found = tuple(shutil.which(tool) for tool in _TOOLS)
    return None if None in found else found  # type: ignore[return-value]


def linked_packages(libraries: Iterable[Path], *, inside: Path) -> tuple[str, ...]:
    """The packages owning the libraries *libraries* name as ``DT_NEEDED``, sorted;
    those found under *inside* (the wheel's own directory) or named like one of
    *libraries* are bundled and not counted, nor are packages every system has.
    Empty without the tools."""
    found = tools()
    if found is None:
        return ()
    readelf, ldd, dpkg, dpkg_query = found
    libraries = list(libraries)
    bundled = {library.name for library in libraries}
    needed: set[str] = set()
    for library in libraries:
        names = _needed(readelf, library) - bundled
        if names:
            needed.update(path for name, path in _ldd(ldd, library).items() if name in names)
    outside = {lib for lib in needed if not lib.startswith(f"{inside}{os.sep}")}
    packages = set(_dpkg_owners(dpkg, outside))
    if packages:
        packages -= _universal_packages(dpkg_query)
    return tuple(sorted(packages))


def _tool_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


def _run(argv: list[str]) -> str:
    """The tool's standard output; empty where it cannot run or times out."""
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=TOOL_TIMEOUT_S, env=_tool_env(),
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _needed(readelf: str, library: Path) -> set[str]:
    """The ``DT_NEEDED`` names of *library* (its direct dependencies)."""
    names = set()
    for line in _run([readelf, "-dW", str(library)]).splitlines():
        if "(NEEDED)" in line and "[" in line and line.rstrip().endswith("]"):
            names.add(line.rsplit("[", 1)[1].rstrip()[:-1])
    return names


def _ldd(ldd: str, library: Path) -> dict[str, str]:
    """Each name the loader resolves for *library*, and the path it resolves it to."""
    found = {}
    for line in _run([ldd, str(library)]).splitlines():
        line = line.strip()
        if "=>" in line:
            name, target = (part.strip() for part in line.split("=>", 1))
        else:
            name = target = line
        target = target.split(" (0x", 1)[0].strip()
        name = name.split(" (0x", 1)[0].strip()
        if target.startswith("/"):
            found[name] = target
            found.setdefault(os.path.basename(name), target)
    return found


def _universal_packages(dpkg_query: str) -> set[str]:
    """The packages every system has: those marked ``Essential: yes``, and :data:`BASE_PACKAGES`."""
    output = _run([dpkg_query, "-W", "-f", "${Package}\t${Essential}\n"])
    essential = {
        line.split("\t", 1)[0].split(":", 1)[0]
        for line in output.splitlines() if line.endswith("\tyes")
    }
    return essential | BASE_PACKAGES


def _path_variants(path: str) -> Iterable[str]:
    """*path*, its real path, and its other spelling on a merged-/usr system (dpkg knows one)."""
    for candidate in {path, os.path.realpath(path)}:
        yield candidate
        if candidate.startswith("/usr/"):
            yield candidate[len("/usr"):]
        else:
            yield "/usr" + candidate


def _dpkg_owners(dpkg: str, libraries: Iterable[str]) -> tuple[str, ...]:
    queries = sorted({
        variant for library in libraries for variant in _path_variants(library)
        if not any(ch in variant for ch in "*?[]\\")
    })
    if not queries:
        return ()
    packages = set()
    for line in _run([dpkg, "-S", *queries]).splitlines():
        if line.startswith("diversion "):
            continue
        owners, sep, _ = line.partition(": ")
        if not sep:
            continue
        for owner in owners.split(", "):
            owner = owner.strip().split(":", 1)[0]
            if owner:
                packages.add(owner)
    return tuple(sorted(packages))
