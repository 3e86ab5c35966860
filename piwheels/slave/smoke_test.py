"""The smoke test after a successful build: does the wheel install and import?

Each wheel is installed into a fresh venv of the build interpreter and its
top-level modules (:func:`piwheels.smoke.wheel_modules`) are imported, by
:mod:`piwheels.slave.smoke_probe`, in the build's sandbox: offline, inside the
build's limits, with the wheel read-only (hard-linked into the sandbox's
input) and a time limit of its own, so an import that hangs or forks is
killed with everything it started.  A failed import's traceback is
classified (:func:`piwheels.diagnosis.import_failure`) and a missing shared
library looked up on this host, outside the sandbox, in Debian's package
contents (:class:`piwheels.debian_lookup.DebianLookup`): the builder's claim.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..diagnosis import import_failure
from ..smoke import FAILED, SmokeResult, clip_detail, verdict, wheel_modules
from .build_log import note
from .smoke_probe import MARKER

if TYPE_CHECKING:  # pragma: no cover
    from ..debian_lookup import DebianLookup
    from ..protocols import WheelFacts
    from .build_run import BuildRun

log = logging.getLogger("piwheels.slave.smoke_test")

#: The file (beside this module) copied into each build to run the test.
PROBE_NAME = "smoke_probe.py"
#: Where, under the build's input and work dirs, the test keeps its files.
SMOKE_DIR = "smoke"


def smoke_test(run: BuildRun, wheels: list[tuple[Path, WheelFacts]], *,
               timeout_s: float, lookup: Optional[DebianLookup]) -> list[SmokeResult]:
    """The smoke test of each of *wheels*, each within *timeout_s* (and the build's
    deadline: a build cancelled or out of time meanwhile is the builder's to end)."""
    staged = run.input / SMOKE_DIR
    staged.mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).with_name(PROBE_NAME), staged / PROBE_NAME)
    results = []
    for number, (path, facts) in enumerate(wheels):
        if run.stopped() is not None:
            break  # cancelled, or out of the build's time: the builder says so
        result = _one(run, path, facts, staged, number, timeout_s, lookup)
        note(run.text, f"smoke test of {facts.filename}: {result.status}"
                       f"{f': {result.detail}' if result.detail else ''}"
                       f"{f' (Debian package {result.package})' if result.package else ''}")
        results.append(result)
    return results


def _one(run: BuildRun, path: Path, facts: WheelFacts, staged: Path, number: int,
         timeout_s: float, lookup: Optional[DebianLookup]) -> SmokeResult:
    filename = facts.filename
    try:
        modules = wheel_modules(path)
    except (OSError, ValueError, KeyError) as exc:  # zipfile.BadZipFile is a ValueError
        return SmokeResult(filename, FAILED, clip_detail(f"cannot read the wheel's modules: {exc}"))
    inside = staged / filename
    try:
        os.link(path, inside)  # read-only in the sandbox: the import cannot change the wheel
    except OSError:
        shutil.copyfile(path, inside)
    layout = run.layout
    input_dir = layout.input / SMOKE_DIR
    venv = layout.work / f"{SMOKE_DIR}-venv-{number}"
    where = "no network" if run.sandbox is not None else "UNCONTAINED"
    note(run.text, f"smoke test ({where}) of {filename}: a fresh venv, the wheel "
                   f"installed, then import {', '.join(modules) or '(no top-level module)'}")
    build_deadline_s = run.deadline_s
    run.deadline_s = min(build_deadline_s, run.builder.clock() + timeout_s)
    try:
        returncode, reason = run.contained(
            [run.builder.python, "-I", str(input_dir / PROBE_NAME), str(input_dir / filename),
             str(venv), json.dumps(modules)])
    finally:
        run.deadline_s = build_deadline_s
    if reason is not None and run.stopped() is None:
        if reason.startswith("timed out"):  # its own time limit, not the build's
            reason = f"the import did not finish within {timeout_s:g} s (killed)"
    answer = _answer(run.output.text())
    requires = bool(facts.requires_dist)
    if reason is not None:
        return verdict(filename, {}, failure=reason, requires_dist=requires)
    if answer is None:
        return verdict(filename, {}, requires_dist=requires, failure=(
            f"the smoke test ended (exit status {returncode}) without an answer"))
    if "importing" in answer:
        return verdict(filename, {}, requires_dist=requires, failure=(
            f"import {answer['importing']}: it ended the process (exit status {returncode}) "
            f"before it answered: {_last_line(run.output.text())}"))
    if "failure" in answer:
        return verdict(filename, {}, failure=str(answer["failure"]), requires_dist=requires)
    answers = answer.get("answers")
    if not isinstance(answers, dict) or not all(isinstance(a, dict) for a in answers.values()):
        return verdict(filename, {}, failure="the smoke test gave an unreadable answer",
                       requires_dist=requires)

    def classify(text: str) -> tuple[str, Optional[str]]:
        diagnosis = import_failure(text)
        provider = None
        if diagnosis.wanted is not None and lookup is not None:
            provider = lookup.package_for(diagnosis.wanted)
        return diagnosis.detail, provider.package if provider is not None else None

    return verdict(filename, answers, requires_dist=requires, classify=classify)


def _last_line(output: str) -> str:
    """The last line the probe printed that is not its own."""
    lines = [line for line in output.splitlines() if line.strip() and not
             line.startswith((MARKER, "--- piwheels", "$ "))]
    return lines[-1] if lines else "no output"


def _answer(output: str) -> Optional[dict]:
    """The probe's answer line (the last), or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            try:
                answer = json.loads(line[len(MARKER):])
            except ValueError:
                return None
            return answer if isinstance(answer, dict) else None
    return None
