"""Bad configuration against the real piw-master and piw-slave: one line, non-zero, at once.

Each value comes from a real configuration file in a temporary directory
(``-c FILE``), from a ``PIW_*`` variable or from a flag, and the real
console script runs as a subprocess.  A bad value or a broken rule between
values is refused before anything is opened, in one line that names the
option; a key no option has is a warning, and the daemon carries on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest
from farm import BIN, free_port

from piwheels.protocols import ENVELOPE_BYTES, MAX_CHUNK_BYTES, MAX_LOG_CHARS

TIMEOUT_S = 20


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """No PIW_* variable or user config file of the caller's reaches the program."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIW_")}
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def run(program: str, *args: str, tmp_path: Path, env: Optional[dict] = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / program), *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                          env=clean_env(tmp_path, **(env or {})))


def write_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "piwheels.conf"
    path.write_text(text)
    return path


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def master_conf(tmp_path: Path, dsn: str = "postgresql://postgres@127.0.0.1:9/none") -> str:
    """A configuration good enough for the master to get past loading it."""
    return (f"dsn = {dsn}\n"
            f"output-path = {tmp_path / 'output'}\n"
            "pypi-simple = http://127.0.0.1:9/simple/\n"
            f"slave-bind = tcp://127.0.0.1:{free_port()}\n"
            f"file-bind = tcp://127.0.0.1:{free_port()}\n"
            f"control-address = ipc://{tmp_path}/control\n"
            f"status-address = ipc://{tmp_path}/status\n")


#: a bad key = value in the master's configuration file, and what the one line must say
MASTER_BAD_VALUES = {
    "chunk size zero": ("chunk-size = 0", ("--chunk-size", f"from 1 to {MAX_CHUNK_BYTES}")),
    "chunk size past the protocol's cap": (
        f"chunk-size = {MAX_CHUNK_BYTES + 1}", ("--chunk-size", f"from 1 to {MAX_CHUNK_BYTES}")),
    "chunk size not a number": ("chunk-size = lots", ("--chunk-size", "lots")),
    "window zero": ("transfer-window = 0", ("--transfer-window", "positive")),
    "timeout zero": ("transfer-timeout = 0", ("--transfer-timeout", "positive")),
    "timeout negative": ("handshake-timeout = -3", ("--handshake-timeout", "positive")),
    "free space negative": ("min-free-space = -1", ("--min-free-space", "0 or more")),
    "liveness zero": ("slave-liveness = 0", ("--slave-liveness", "positive")),
    "slave bind garbage": ("slave-bind = garbage", ("--slave-bind", "tcp://", "ipc://")),
    "file bind with no port": ("file-bind = tcp://127.0.0.1", ("--file-bind",)),
    "file bind port out of range": ("file-bind = tcp://*:70000", ("--file-bind", "1-65535")),
    "control address with no scheme": ("control-address = /run/control",
                                       ("--control-address",)),
    "upstream not http": ("pypi-simple = ftp://127.0.0.1/simple/", ("--pypi-simple", "http")),
    "public url not a url": ("public-url = somewhere", ("--public-url", "http")),
    "build policy garbage": ("build-policy = sometimes", ("--build-policy",)),
    "a public bind without keys": ("slave-bind = tcp://*:5998",
                                   ("--slave-bind", "--master-key", "--open-farm")),
    "a master key that is not there": ("master-key = /nonexistent/master.key_secret",
                                       ("--master-key", "does not exist")),
    "containment neither way": ("containment = perhaps", ("--containment", "required")),
}


@pytest.mark.parametrize("case", MASTER_BAD_VALUES)
def test_a_bad_value_in_the_masters_file_is_one_line_and_non_zero(case, tmp_path):
    line, expected = MASTER_BAD_VALUES[case]
    conf = write_conf(tmp_path, master_conf(tmp_path) + line + "\n")
    result = run("piw-master", "-c", str(conf), tmp_path=tmp_path)
    one_line_error(result, *expected)
    assert not (tmp_path / "output").exists()  # refused before anything was made


#: rules between values, each broken by one pair of settings
MASTER_BAD_PAIRS = {
    "heartbeat x liveness under a second": (
        "heartbeat-interval = 0.2\nslave-liveness = 2",
        ("--heartbeat-interval", "--slave-liveness", "at least 1 second")),
    "deadline shorter than one chunk's timeout": (
        "transfer-timeout = 30\ntransfer-deadline = 10",
        ("--transfer-deadline", "--transfer-timeout")),
    "unpacked limit below the wheel limit": (
        "max-wheel-size = 2000\nmax-unpacked-size = 1000",
        ("--max-unpacked-size", "--max-wheel-size")),
    "reconcile more often than polling": (
        "poll-interval = 60\nreconcile-interval = 30",
        ("--reconcile-interval", "--poll-interval")),
    "two sockets on one address": (
        "slave-bind = tcp://127.0.0.1:5999\nfile-bind = tcp://127.0.0.1:5999",
        ("--slave-bind", "--file-bind", "different")),
}


@pytest.mark.parametrize("case", MASTER_BAD_PAIRS)
def test_a_broken_rule_between_values_is_one_line_and_non_zero(case, tmp_path):
    lines, expected = MASTER_BAD_PAIRS[case]
    conf = write_conf(tmp_path, master_conf(tmp_path) + lines + "\n")
    one_line_error(run("piw-master", "-c", str(conf), tmp_path=tmp_path), *expected)


def test_the_same_rules_hold_for_flags_and_variables(tmp_path):
    conf = write_conf(tmp_path, master_conf(tmp_path))
    one_line_error(run("piw-master", "-c", str(conf), "--min-free-space", "-5",
                       tmp_path=tmp_path), "--min-free-space", "0 or more")
    one_line_error(run("piw-master", "-c", str(conf), tmp_path=tmp_path,
                       env={"PIW_CHUNK_SIZE": str(MAX_CHUNK_BYTES * 2)}), "--chunk-size")


def test_a_misspelt_flag_stays_an_error(tmp_path):
    conf = write_conf(tmp_path, master_conf(tmp_path))
    one_line_error(run("piw-master", "-c", str(conf), "--chunk-sise", "10", tmp_path=tmp_path),
                   "unrecognized arguments: --chunk-sise")


def test_an_unknown_key_is_one_warning_and_help_still_works(tmp_path):
    conf = write_conf(tmp_path, master_conf(tmp_path) + "chunk-sise = 1000\n")
    result = run("piw-master", "-c", str(conf), "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--chunk-size" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"piw-master: warning: {conf}: unknown key 'chunk-sise' ignored "
        "(no piwheels option has this name)"]


def test_a_key_of_another_command_is_not_warned_of(tmp_path):
    # one file serves every command: the slave's keys mean nothing to the master
    conf = write_conf(tmp_path, master_conf(tmp_path) + "timeout = 60\nmax-log-size = 1000\n")
    result = run("piw-master", "-c", str(conf), "--help", tmp_path=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_master_with_an_unknown_key_starts_and_serves(tmp_path, master_dsn):
    """The warning does not stop it: the master reaches READY and stops cleanly."""
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(TIMEOUT_S)
    conf = write_conf(tmp_path, master_conf(tmp_path, master_dsn) + "bogus-key = 1\n")
    proc = subprocess.Popen([str(BIN / "piw-master"), "-c", str(conf)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=clean_env(tmp_path, NOTIFY_SOCKET=str(notify_path)))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        said = ""
        while "READY=1" not in said and time.monotonic() < deadline:
            said += notify.recv(4096).decode()
        assert "READY=1" in said
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    assert proc.returncode == 0, stderr
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert warnings == [f"piw-master: warning: {conf}: unknown key 'bogus-key' ignored "
                        "(no piwheels option has this name)"]
    assert "master stopped" in stderr


# --- piw-slave ---------------------------------------------------------------------

SLAVE_BAD_VALUES = {
    "port out of range": ("slave-port = 70000", ("--slave-port", "1 to 65535")),
    "port zero": ("file-port = 0", ("--file-port", "1 to 65535")),
    "the two ports the same": ("slave-port = 6000\nfile-port = 6000",
                               ("--slave-port", "--file-port", "differ")),
    "timeout zero": ("timeout = 0", ("--timeout", "positive")),
    "memory limit negative": ("memory-limit = -1", ("--memory-limit", "0 or more")),
    "log size past the protocol's cap": (
        f"max-log-size = {MAX_LOG_CHARS}",
        ("--max-log-size", f"from 1 to {MAX_LOG_CHARS - ENVELOPE_BYTES}")),
    "master name with a space": ("master = two words", ("--master", "host name")),
    "label too long": ("label = " + "x" * 101, ("--label", "1 to 100")),
    "a slave key without the master's": ("slave-key = /nonexistent/pi.key_secret",
                                         ("--slave-key", "--master-public-key")),
}


@pytest.mark.parametrize("case", SLAVE_BAD_VALUES)
def test_a_bad_value_in_the_slaves_file_is_one_line_and_non_zero(case, tmp_path):
    line, expected = SLAVE_BAD_VALUES[case]
    conf = write_conf(tmp_path, f"dir = {tmp_path / 'work'}\n{line}\n")
    one_line_error(run("piw-slave", "-c", str(conf), tmp_path=tmp_path), *expected)
    assert not (tmp_path / "work").exists()  # refused before the work dir was made


def test_a_slave_with_an_unknown_key_warns_and_carries_on(tmp_path):
    """Past loading, it goes on to look the master up (which fails, as it should here)."""
    conf = write_conf(tmp_path, f"dir = {tmp_path / 'work'}\nmaster = no-such-host.invalid\n"
                                "slave-lable = mine\n")
    result = run("piw-slave", "-c", str(conf), tmp_path=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (f"piw-slave: warning: {conf}: unknown key 'slave-lable' ignored "
                        "(no piwheels option has this name)")
    # the first check past loading: as root, the refusal to build as root
    after = "refuses to run as root" if os.geteuid() == 0 else "no-such-host.invalid"
    assert len(lines) == 2 and after in lines[1], result.stderr
    assert result.returncode == 1


# --- piw-monitor -------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("control-address = tcp://*:5555", ("--control-address", "tcp://HOST:PORT")),
    ("status-address = nowhere", ("--status-address",)),
    ("request-timeout = 0", ("--request-timeout", "positive")),
])
def test_a_bad_value_for_the_monitor_is_one_line_before_it_draws(line, expected, tmp_path):
    conf = write_conf(tmp_path, line + "\n")
    one_line_error(run("piw-monitor", "-c", str(conf), tmp_path=tmp_path), *expected)


# --- the admin tools and piw-initdb ------------------------------------------------

#: (program and arguments, config file text, PIW_* variables, what the one error line says)
ADMIN_TYPOS = {
    "a timeout of zero in the file": (
        ["piw-add", "foo"], "request-timeout = 0", {}, ("--request-timeout", "positive")),
    "a negative timeout in a variable": (
        ["piw-rebuild", "home"], "", {"PIW_REQUEST_TIMEOUT": "-1"}, ("--request-timeout",)),
    "a control address that cannot be connected to": (
        ["piw-control", "pause"], "control-address = tcp://*:5555", {},
        ("--control-address", "tcp://HOST:PORT")),
    "a status address that is no address": (
        ["piw-rebuild", "home"], "status-address = somewhere", {}, ("--status-address",)),
    "free space past what 64 bits hold": (
        ["piw-control", "min-free-space", str(2**43)], "", {}, ("min-free-space", "at most")),
    "a label longer than its column": (
        ["piw-import", "--label", "l" * 101, "x.whl"], "", {}, ("--label", "1..100")),
    "a database URL that is none": (
        ["piw-initdb", "-y"], "dsn = garbage", {}, ("cannot parse database URL 'garbage'",)),
    # a tool's own arguments are not configuration: --skip in a file is not taken
    "a skip reason in the file": (
        ["piw-add", "corp-*"], "skip = internal", {}, ("goes with --skip or --unskip only",)),
}


@pytest.mark.parametrize("case", ADMIN_TYPOS)
def test_an_admin_tools_typo_is_one_line_before_it_asks_the_master(case, tmp_path):
    command, text, env, expected = ADMIN_TYPOS[case]
    conf = write_conf(tmp_path, f"control-address = ipc://{tmp_path}/nobody\n{text}\n")
    result = run(command[0], "-c", str(conf), *command[1:], tmp_path=tmp_path, env=env)
    lines = result.stderr.strip().splitlines()
    if "skip = " in text:  # warned of, then not taken
        assert lines[0].endswith("unknown key 'skip' ignored (no piwheels option has this name)")
        result.stderr = "\n".join(lines[1:])
    one_line_error(result, *expected)


def test_an_admin_tool_warns_of_an_unknown_key_and_carries_on(tmp_path):
    """Past loading, piw-add goes on to the master (not there: its own one line)."""
    conf = write_conf(tmp_path, f"control-address = ipc://{tmp_path}/nobody\n"
                                "request-timout = 5\n")
    result = run("piw-add", "-c", str(conf), "--request-timeout", "0.2", "foo", tmp_path=tmp_path,
                 env={"PIW_STATUS_REASON": "not an option: not taken"})
    assert result.stderr.strip().splitlines() == [
        f"piw-add: warning: {conf}: unknown key 'request-timout' ignored "
        "(no piwheels option has this name)",
        f"error: the master did not answer on ipc://{tmp_path}/nobody within 0.2 s; there is "
        f"no socket at {tmp_path}/nobody: piw-master is not running, or it uses another "
        "address"], result.stderr
    assert result.returncode == 1
