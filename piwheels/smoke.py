"""The smoke test of a built wheel: what to import, and what its outcome means.

Pure (no processes): the slave (:mod:`piwheels.slave.smoke_test`) runs the
test, this module says which modules a wheel's import should reach and turns
the import's answers into one :class:`SmokeResult`.  A wheel whose import
fails is ``failed``; one whose import fails only for want of another
distribution (the test installs the wheel alone and offline, so its
Requires-Dist is absent) is ``incomplete``: neither a pass nor the wheel's
fault.  No result at all (the slave runs without the test) is "not tested".
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from . import limits

#: The outcomes of a smoke test (the smoke_tests table's CHECK lists the same).
PASSED, FAILED, INCOMPLETE = "passed", "failed", "incomplete"
SMOKE_STATUSES = (PASSED, FAILED, INCOMPLETE)
#: What the master does with a wheel whose smoke test failed (``--smoke-policy``).
SMOKE_POLICIES = ("warn", "hold")
#: The cause of an attempt held back by ``--smoke-policy hold``.
SMOKE_CAUSE = "smoke-import"
#: Top-level names never imported: test suites that wheels ship by mistake.
NOT_IMPORTED = frozenset({"test", "tests", "testing", "__pycache__"})
#: The most modules imported of one wheel (more are left out).
MAX_MODULES = 200
#: How much of a failed import's traceback the slave reads.
MAX_TRACEBACK_CHARS = 8000

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: ``name.py``, and extension modules: ``name.so``, ``name.cpython-311-x86_64-linux-gnu.so``,
#: ``name.abi3.so``, ``name.pyd``
_MODULE_FILE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.py|(?:\.[A-Za-z0-9_-]+)?\.(?:so|pyd))\Z")


@dataclass(frozen=True)
class SmokeResult:
    """The smoke test of one wheel, as the builder reports it.

    *detail*: what failed (or what was missing); *package*: the Debian package
    that provides a shared library the import could not find.
    """

    filename: str
    status: str
    detail: Optional[str] = None
    package: Optional[str] = None

    def __post_init__(self) -> None:
        if self.status not in SMOKE_STATUSES:
            raise ValueError(f"smoke test status must be one of {SMOKE_STATUSES}, "
                             f"not {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SmokeResult":
        return cls(filename=data["filename"], status=data["status"],
                   detail=data.get("detail"), package=data.get("package"))


def clip_detail(text: str) -> str:
    """*text* as one line of at most ``limits.CAUSE_DETAIL`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limits.CAUSE_DETAIL else line[:limits.CAUSE_DETAIL - 3] + "..."


def top_level_modules(paths: Iterable[str], top_level: Optional[str] = None) -> list[str]:
    """The modules a wheel's import should reach: the names of *top_level*
    (``top_level.txt``) when the wheel has one, else the top-level packages and
    modules among *paths* (RECORD's): directories, ``.py`` files and extension
    modules, but not ``*.data``, ``*.dist-info``, test suites or invalid names."""
    names: set[str] = set()
    if top_level is not None and top_level.strip():
        for line in top_level.splitlines():
            # a namespace package's entry may name a sub-package ("google/protobuf")
            name = line.strip().replace("\\", "/").split("/")[0]
            if _IDENTIFIER.match(name):
                names.add(name)
    else:
        for path in paths:
            parts = path.replace("\\", "/").lstrip("/").split("/")
            if len(parts) > 1:
                first = parts[0]
                if first.endswith((".data", ".dist-info")) or not _IDENTIFIER.match(first):
                    continue
                if len(parts) == 2 and not _MODULE_FILE.match(parts[1]):
                    continue  # a directory holding no module, only data files
                names.add(first)
            else:
                match = _MODULE_FILE.match(parts[0])
                if match is not None:
                    names.add(match.group(1))
    names -= NOT_IMPORTED
    names.discard("__init__")
    return sorted(names)[:MAX_MODULES]


def wheel_modules(path: Path) -> list[str]:
    """:func:`top_level_modules` of the wheel file at *path* (its dist-info's
    ``top_level.txt``, else its RECORD, else its member names)."""
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        info = sorted({m.split("/")[0] for m in members
                       if m.split("/")[0].endswith(".dist-info") and "/" in m})
        top_level = record = None
        for directory in info[:1]:
            if f"{directory}/top_level.txt" in members:
                top_level = archive.read(f"{directory}/top_level.txt").decode("utf-8", "replace")
            if f"{directory}/RECORD" in members:
                record = archive.read(f"{directory}/RECORD").decode("utf-8", "replace")
    paths = members
    if record is not None:
        paths = [row[0] for row in csv.reader(io.StringIO(record)) if row]
    return top_level_modules(paths, top_level)


def verdict(filename: str, answers: Mapping[str, Mapping[str, Any]], *,
            failure: Optional[str] = None, requires_dist: bool = True,
            classify=None) -> SmokeResult:
    """One result from the import's *answers* (module -> ``{"ok": True}``,
    ``{"missing": NAME}`` for a module that is not in the wheel, or
    ``{"error": TRACEBACK}``), or from a *failure* before any answer (the
    install failed, the import timed out or died).  *classify* turns an error's
    traceback into ``(detail, package)`` (the missing shared library and its
    Debian package); without it the traceback's last line is the detail.  A
    module missing from a wheel that *requires_dist* nothing is the wheel's
    fault: it imports what it does not declare."""
    def described(text: str) -> tuple[str, Optional[str]]:
        if classify is not None:
            return classify(text)
        lines = [line for line in text.splitlines() if line.strip()]
        return clip_detail(lines[-1] if lines else "the import failed"), None

    if failure is not None:
        detail, package = described(failure)
        return SmokeResult(filename, FAILED, detail, package)
    errors = [(name, answer["error"]) for name, answer in sorted(answers.items())
              if "error" in answer]
    if errors:
        name, text = errors[0]
        detail, package = described(str(text))
        return SmokeResult(filename, FAILED, clip_detail(f"import {name}: {detail}"), package)
    missing = sorted({str(answer["missing"]) for answer in answers.values()
                      if "missing" in answer})
    if missing and not requires_dist:
        return SmokeResult(filename, FAILED, clip_detail(
            f"imports {', '.join(missing)}, which it does not require (no Requires-Dist)"))
    if missing:
        return SmokeResult(filename, INCOMPLETE, clip_detail(
            f"needs {', '.join(missing)}, not installed (the smoke test installs the "
            f"wheel alone, offline)"))
    if not answers:
        return SmokeResult(filename, PASSED, "installed; it has no top-level module to import")
    return SmokeResult(filename, PASSED, clip_detail(f"imported {', '.join(sorted(answers))}"))
