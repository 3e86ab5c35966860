"""Real ``pip wheel`` of the failing sdists: diagnose() on their real logs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from failing_sdists import FAILING_SDISTS, build_log, missing_on_this_host

from piwheels.diagnosis import CAUSES, diagnose

#: Builds at once (the suite runs on two cores).
PARALLEL_BUILDS = 2


def test_every_failing_sdist_fails_with_its_cause(tmp_path: Path, build_backends: list[Path]):
    present = {name: missing_on_this_host(sdist) for name, sdist in FAILING_SDISTS.items()}
    present = {name: things for name, things in present.items() if things}
    if present:
        pytest.fail(f"this host has what these sdists must lack: {present}")
    backends = sorted({wheel.parent for wheel in build_backends})

    def build(name: str) -> tuple[str, int, str]:
        returncode, log = build_log(FAILING_SDISTS[name], tmp_path / name, backends)
        return name, returncode, log

    with ThreadPoolExecutor(PARALLEL_BUILDS) as pool:
        results = list(pool.map(build, sorted(FAILING_SDISTS)))
    wrong = {}
    for name, returncode, log in results:
        sdist = FAILING_SDISTS[name]
        found = diagnose(log)
        if returncode == 0 or (found.cause, found.wanted) != (sdist.cause, sdist.wanted):
            wrong[name] = (returncode, found, log[-2000:])
    assert not wrong
    # every cause a build itself can meet here has its sdist
    assert {s.cause for s in FAILING_SDISTS.values()} == set(CAUSES) - {
        "timeout", "no-sdist", "upstream-unreachable", "smoke-import", "unknown", "bad-wheel"}
