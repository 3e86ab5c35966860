"""piw-slave says when the master's name does not resolve, instead of retrying in silence."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from farm import BIN, build_user

from piwheels.slave import RESOLVE_WARNING_INTERVAL_S, Slave
from piwheels.slave.builder import Builder, BuildLimits

UNRESOLVABLE = "no-such-master.invalid"  # .invalid never resolves (RFC 2606)


def test_an_unresolvable_master_is_one_line_and_a_failure_at_start(tmp_path: Path) -> None:
    user = build_user()
    kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    work = Path("/tmp") / f"piw-name-test-{tmp_path.name}"
    work.mkdir()
    try:
        if user:
            os.chown(work, user.pw_uid, user.pw_gid)
        done = subprocess.run(
            [str(BIN / "piw-slave"), "--master", UNRESOLVABLE, "--dir", str(work)],
            capture_output=True, text=True, timeout=60, cwd="/", **kwargs)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: the master's name '{UNRESOLVABLE}' does not resolve: ")
        assert list(work.iterdir()) == []  # nothing was made before the check
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)


def test_a_running_slave_warns_once_a_minute_while_the_name_does_not_resolve(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    builder = Builder(python=sys.executable, index_url="", work_dir=tmp_path / "work",
                      cache_dir=tmp_path / "cache",
                      limits=BuildLimits(timeout_s=60, memory_bytes=0, max_log_bytes=1000,
                                        pid_limit=0, disk_bytes=2**20))
    slave = Slave(master=UNRESOLVABLE, slave_port=5555, file_port=5556, label="t",
                  builder=builder, build_timeout_s=60, clock=lambda: now[0])
    try:
        with caplog.at_level(logging.WARNING, logger="piwheels.slave"):
            slave.connect()
            slave.connect()  # a reconnect a few seconds later: no second line
            now[0] += RESOLVE_WARNING_INTERVAL_S
            slave.connect()
        warnings = [r.getMessage() for r in caplog.records if "does not resolve" in r.getMessage()]
        assert len(warnings) == 2
        assert warnings[0].startswith(f"the master's name '{UNRESOLVABLE}' does not resolve")
        assert warnings[0].endswith("; still trying")
    finally:
        slave.shutdown()
