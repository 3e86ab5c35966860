"""The Debian packages shared libraries link to: ``ldd`` finds what each loads,
``dpkg -S`` which package owns it.  Only a builder can ask this of its own
system, so what it finds is the builder's claim (see
:mod:`piwheels.wheel_facts`); a pure helper, no sockets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Optional

#: How long one ``ldd`` or ``dpkg -S`` may take before the lookup gives up.
TOOL_TIMEOUT_S = 60.0


def tools() -> Optional[tuple[str, str]]:
    """The paths of ``ldd`` and ``dpkg``, or None where either is missing."""
    ldd, dpkg = shutil.which("ldd"), shutil.which("dpkg")
    return (ldd, dpkg) if ldd is not None and dpkg is not None else None


def linked_packages(libraries: Iterable[Path], *, inside: Path) -> tuple[str, ...]:
    """The packages owning what *libraries* load, sorted; what they load from
    under *inside* (their own directory) is not counted.  Empty without the tools."""
    found = tools()
    if found is None:
        return ()
    ldd, dpkg = found
    loaded: set[str] = set()
    for library in libraries:
        loaded.update(_ldd(ldd, library))
    return _dpkg_owners(dpkg, {lib for lib in loaded if not lib.startswith(f"{inside}{os.sep}")})


def _tool_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


def _ldd(ldd: str, library: Path) -> set[str]:
    """The resolved paths of the libraries *library* loads."""
    try:
        result = subprocess.run(
            [ldd, str(library)], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=TOOL_TIMEOUT_S, env=_tool_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    found = set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip()
        else:
            target = line
        target = target.split(" (0x", 1)[0].strip()
        if target.startswith("/"):
            found.add(target)
    return found


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
    try:
        result = subprocess.run(
            [dpkg, "-S", *queries], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=TOOL_TIMEOUT_S, env=_tool_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    packages = set()
    for line in result.stdout.splitlines():
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
