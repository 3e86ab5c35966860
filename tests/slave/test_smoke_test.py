"""The smoke test on a real builder: real builds, a real sandbox, real imports.

(The missing shared library and its Debian package go through a real farm, in
tests/e2e/test_smoke_policy.py.)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from smoke_sdists import CASES, make_smoke_sdist

from piwheels.slave.builder import Builder, BuildLimits

GiB = 1024 * 1024 * 1024


def builder(build_index, build_cache_dir: Path, tmp_path: Path, **options) -> Builder:
    return Builder(
        python=sys.executable, index_url=build_index.url, work_dir=tmp_path / "work",
        cache_dir=build_cache_dir,
        limits=BuildLimits(timeout_s=300.0, memory_bytes=2 * GiB, max_log_bytes=1024 * 1024,
                           pid_limit=256, disk_bytes=GiB),
        **options)


# (what the probe answers for each kind of import: tests/test_smoke.py, on crafted wheels)
@pytest.mark.parametrize("name", ["smoke-passes", "smoke-needs-dependency"])
def test_smoke_test_result(name, build_index, build_cache_dir, tmp_path):
    case = CASES[name]
    build_index.add(make_smoke_sdist(tmp_path / "sdists", name))
    with builder(build_index, build_cache_dir, tmp_path).build(name, "1.0") as result:
        assert result.success, result.log[-3000:]
        (smoke,) = result.smoke
        assert smoke.filename == result.wheels[0][1].filename
        assert (smoke.status, smoke.package) == (case.status, case.package), result.log[-3000:]
        assert case.detail in smoke.detail
        assert f"smoke test of {smoke.filename}: {case.status}" in result.log


def test_no_smoke_test(build_index, build_cache_dir, tmp_path):
    build_index.add(make_smoke_sdist(tmp_path / "sdists", "smoke-raises", "2.0"))
    made = builder(build_index, build_cache_dir, tmp_path, smoke_test=False)
    with made.build("smoke-raises", "2.0") as result:
        assert result.success and result.smoke is None
        assert "smoke test: not run" in result.log


def sleeping(token: str) -> list[int]:
    """The live processes running ``sleep TOKEN`` (zombies are gone enough)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", token.encode()]:
            found.append(int(entry.name))
    return found


def test_import_that_hangs_and_forks_is_killed(build_index, build_cache_dir, tmp_path):
    token = f"86400.{os.getpid()}{time.monotonic_ns()}"
    build_index.add(make_smoke_sdist(tmp_path / "sdists", "smoke-hangs", token=token))
    made = builder(build_index, build_cache_dir, tmp_path, smoke_timeout_s=3.0)
    results = []
    thread = threading.Thread(target=lambda: results.append(made.build("smoke-hangs", "1.0")))
    thread.start()
    deadline = time.monotonic() + 120
    while not sleeping(token) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeping(token), "the import's child never ran"
    forked_s = time.monotonic()
    thread.join(60)
    assert not thread.is_alive()
    assert time.monotonic() - forked_s < 15  # the 3 s limit, not the build's 300 s
    with results[0] as result:
        assert result.success, result.log[-3000:]
        (smoke,) = result.smoke
        assert smoke.status == "failed" and "did not finish within 3 s" in smoke.detail
        assert sleeping(token) == []
