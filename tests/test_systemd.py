"""The systemd units, and the notifications piw-master and piw-slave send systemd.

The units are checked by systemd's own ``systemd-analyze verify`` (where the
machine has it) and, everywhere, for the settings the deployment relies on.
The notification tests bind a real unix datagram socket, hand it to real
daemons as ``NOTIFY_SOCKET`` the way systemd does, and read what they say.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
from farm import Farm, Process, pyenv_python

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent
INSTALLED_BIN = "/opt/piwheels/bin"


def read_unit(path: Path) -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def seconds(value: str) -> float:
    """A systemd time span such as "60s", "2min" or "90"."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600,
                                  "ms": 0.001}[unit]
    return total


def test_both_units_are_there():
    assert [unit.name for unit in UNITS] == ["piwheels-master.service",
                                             "piwheels-slave.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_unit_settings(path):
    service = read_unit(path)["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert seconds(service["WatchdogSec"]) >= 10
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] in ("strict", "full")
    assert service["PrivateTmp"] == "yes"
    assert service["User"] not in ("", "root")
    # ~1,000 idle TCP connections exhaust the usual soft limit of 1024
    assert int(service["LimitNOFILE"].split(":")[-1]) >= 16384
    assert read_unit(path)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_exec_start_is_a_console_script_with_known_options(path):
    command = shlex.split(read_unit(path)["Service"]["ExecStart"])
    program = Path(command[0])
    assert str(program.parent) == INSTALLED_BIN
    assert (BIN / program.name).exists(), f"{program.name} is not an installed console script"
    helped = subprocess.run([str(BIN / program.name), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    for arg in command[1:]:
        if arg.startswith("-"):
            assert re.search(rf"(^|[\s,]){re.escape(arg)}\b", helped.stdout), \
                f"{program.name} has no option {arg}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    # verify wants the commands to exist: point them at this installation
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED_BIN + "/", f"{BIN}/"))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_verify_would_see_a_mistake(tmp_path):
    """The check above is not blind: a misspelt setting is reported."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "piwheels-master.service"
    copy.write_text(UNITS[0].read_text().replace(INSTALLED_BIN + "/", f"{BIN}/")
                    .replace("Type=notify", "Type=notifi"))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    assert "notifi" in result.stderr


# --- sd_notify ------------------------------------------------------------------------


class NotifySocket:
    """The service manager's end: a unix datagram socket anyone may write to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)  # slaves run as the unprivileged build user
        self.messages: list[str] = []

    def wait_for(self, state: str, timeout_s: float, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while self.messages.count(state) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {state} ({count}) within {timeout_s} s: "
                                     f"{self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages += data.decode().splitlines()
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(farm):
    # under the farm's work root: the build user can reach it, pytest's temp dir it cannot
    sock = NotifySocket(farm.work_root / "notify")
    try:
        yield sock
    finally:
        sock.close()


@pytest.mark.slow
def test_master_tells_systemd_ready_watchdog_stopping(farm, notify, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every half second
    master = farm.start_master()
    notify.wait_for("READY=1", 10)
    assert notify.messages[0] == "READY=1"  # nothing before it: not ready before started
    notify.wait_for("WATCHDOG=1", 10, count=3)
    assert master.stop() == 0
    notify.wait_for("STOPPING=1", 5)
    assert notify.messages.index("STOPPING=1") > notify.messages.index("READY=1")


@pytest.mark.slow
def test_slave_tells_systemd_ready_watchdog_stopping(farm, notify):
    farm.start_master()
    slave = start_slave_notifying(farm, notify.path, watchdog_usec=1_000_000)
    notify.wait_for("READY=1", 30)
    notify.wait_for("WATCHDOG=1", 10, count=3)
    assert any(m.startswith("STATUS=slave 1 ") for m in notify.messages), notify.messages
    slave.stop()
    notify.wait_for("STOPPING=1", 10)


def start_slave_notifying(farm: Farm, notify_path: Path, watchdog_usec: Optional[int]) -> Process:
    work = farm.work_root / "work-notify"
    work.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "NOTIFY_SOCKET": str(notify_path)}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    if farm.user is not None:
        os.chown(work, farm.user.pw_uid, farm.user.pw_gid)
        env["HOME"] = farm.user.pw_dir
    slave = Process([
        str(BIN / "piw-slave"), "-v", "--master", "127.0.0.1",
        "--slave-port", str(farm.slave_port), "--file-port", str(farm.file_port),
        "--label", "notifying", "--dir", str(work), "--python", pyenv_python("11"),
        *farm.slave_key_args("notifying"),
    ], farm.tmp_path / "slave-notifying.log", user=farm.user, env=env)
    farm.slaves.append(slave)
    return slave


def test_a_slave_told_to_stop_stays_stopped():
    from piwheels.slave import EXIT_TOLD_TO_STOP

    service = read_unit(UNITS[1])["Service"]
    assert service["RestartPreventExitStatus"].split() == [str(EXIT_TOLD_TO_STOP)]
