"""CURVE keys: files, the enrolled-keys directory, the rules at load, and piw-keys.

Real key files in a temporary directory, the real piw-keys and piw-master
console scripts as subprocesses: every refusal is one line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from farm import BIN

from piwheels import settings
from piwheels.errors import ConfigError, KeyFileError
from piwheels.keys import (
    FULL_RECHECK_S, KEY_ID_LENGTH, EnrolledKeys, key_id, load_key_pair, load_public_key,
    make_key_pair, public_path,
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIW_")}
    env["HOME"] = str(cwd)  # no user configuration file of the caller's
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, cwd=cwd, env=env)


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_pair_is_private_and_its_id_short_and_stable(tmp_path):
    pair, public = make_key_pair(tmp_path / "keys" / "m.key_secret")
    assert public == tmp_path / "keys" / "m.key"
    assert (tmp_path / "keys" / "m.key_secret").stat().st_mode & 0o777 == 0o600
    assert public.stat().st_mode & 0o777 == 0o644
    assert load_key_pair(tmp_path / "keys" / "m.key_secret") == pair
    assert load_public_key(public) == pair.public
    assert len(pair.key_id) == KEY_ID_LENGTH and pair.key_id == key_id(pair.public.decode())
    other, _ = make_key_pair(tmp_path / "o.key_secret")
    assert other.key_id != pair.key_id
    assert not [p for p in (tmp_path / "keys").iterdir() if p.name.startswith(".")]
    with pytest.raises(KeyFileError, match="exists already"):
        make_key_pair(tmp_path / "keys" / "m.key_secret")
    assert make_key_pair(tmp_path / "keys" / "m.key_secret", force=True)[0] != pair


@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.chmod(0o640), "open to others (mode 0640)"),
    (lambda p: p.chmod(0o604), "chmod 600"),
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_text("hello\n"), "holds no public key"),
    (lambda p: p.write_bytes(public_path(p).read_bytes()), "holds only a public key"),
])
def test_a_secret_key_file_that_cannot_be_used_is_one_line(tmp_path, spoil, message):
    secret = tmp_path / "s.key_secret"
    make_key_pair(secret)
    spoil(secret)
    with pytest.raises(KeyFileError) as info:
        load_key_pair(secret, "--slave-key")
    assert message in str(info.value)
    assert str(info.value).startswith("--slave-key ") and "\n" not in str(info.value)


def test_the_enrolled_keys_follow_their_directory(tmp_path):
    enrolled = tmp_path / "authorized"
    enrolled.mkdir()
    alice, alice_public = make_key_pair(tmp_path / "alice.key_secret")
    bob, bob_public = make_key_pair(tmp_path / "bob.key_secret")
    now = [0.0]
    view = EnrolledKeys(enrolled, clock=lambda: now[0])
    assert view.lookup(alice.public) is None
    (enrolled / "alice.key").write_bytes(alice_public.read_bytes())
    (enrolled / "junk.key").write_text("not a key\n")  # ignored, not fatal
    found = view.lookup(alice.public)  # a new file is seen at once
    assert (found.name, found.key_id) == ("alice", alice.key_id)
    assert view.lookup(alice.public.decode()) == found
    # edited in place (the directory does not change): seen within the full re-check
    (enrolled / "alice.key").write_bytes(bob_public.read_bytes())
    now[0] += FULL_RECHECK_S
    assert view.lookup(alice.public) is None and view.lookup(bob.public).name == "alice"
    (enrolled / "alice.key").unlink()  # revoked: gone at the next look
    assert view.lookup(bob.public) is None


def master_record(tmp_path: Path, **changes) -> settings.MasterConfig:
    base = dict(
        dsn="postgresql:///x", output_path=str(tmp_path / "out"),
        pypi_simple="http://127.0.0.1:9/simple/", pypi_json="", pypi_xmlrpc="",
        package_allow=(), package_allow_file=None, poll_interval_s=10.0,
        reconcile_interval_s=300.0, oldest_first=False, build_policy="all",
        build_prereleases=False, slave_bind="tcp://127.0.0.1:5555",
        file_bind="tcp://127.0.0.1:5556", public_url="http://localhost/", site_name="p",
        heartbeat_interval_s=3.0, slave_liveness=3, sleep_interval_s=5.0,
        queue_interval_s=60.0, queue_size=10, chunk_size=65536, transfer_window=4,
        transfer_timeout_s=10.0, transfer_retries=3, transfer_deadline_s=600.0,
        max_wheel_size=2**20, max_unpacked_size=2**22, max_compression_ratio=100.0,
        handshake_timeout_s=10.0, control_address=f"ipc://{tmp_path}/c",
        status_address=f"ipc://{tmp_path}/s", min_free_space_mb=1, stats_interval_s=10.0,
        summary_interval_s=5.0,
        retry_delay_s=3600.0)
    base.update(changes)
    return settings.MasterConfig(**base)


def test_without_keys_the_master_takes_only_this_machine_unless_the_farm_is_open(tmp_path):
    master_record(tmp_path)  # loopback
    master_record(tmp_path, slave_bind="tcp://[::1]:5555", file_bind="ipc:///run/x")
    for address in ("tcp://*:5555", "tcp://192.0.2.1:5555", "tcp://eth0:5555",
                    "tcp://piwheels.example:5555"):
        with pytest.raises(ConfigError, match="--master-key") as info:
            master_record(tmp_path, file_bind=address)
        assert str(info.value).startswith(f"--file-bind {address} ")
    open_farm = master_record(tmp_path, slave_bind="tcp://*:5555", open_farm=True)
    assert open_farm.curve is None and open_farm.enrolled_dir is None


def test_with_keys_the_master_checks_them_at_load(tmp_path):
    make_key_pair(tmp_path / "keys" / "master.key_secret")
    key = str(tmp_path / "keys" / "master.key_secret")
    with pytest.raises(ConfigError, match="authorized is not a directory"):
        master_record(tmp_path, master_key=key)
    (tmp_path / "keys" / "authorized").mkdir()
    record = master_record(tmp_path, master_key=key, slave_bind="tcp://*:5555")
    assert record.enrolled_dir == tmp_path / "keys" / "authorized"
    assert record.curve.keys == load_key_pair(key)
    with pytest.raises(ConfigError, match="exclude each other"):
        master_record(tmp_path, master_key=key, open_farm=True)
    (tmp_path / "keys" / "authorized").chmod(0o777)
    with pytest.raises(ConfigError, match="may be written by others"):
        dataclasses.replace(record)
    (tmp_path / "keys" / "authorized").chmod(0o755)
    (tmp_path / "keys" / "master.key_secret").chmod(0o644)
    with pytest.raises(ConfigError, match="^--master-key .* open to others"):
        dataclasses.replace(record)


def test_piw_master_refuses_a_public_bind_without_keys_in_one_line(tmp_path):
    result = run("piw-master", "--pypi-simple", "http://127.0.0.1:9/simple/",
                 "--output-path", str(tmp_path / "out"), "--slave-bind", "tcp://*:5999",
                 "--file-bind", "tcp://127.0.0.1:5998",
                 "--control-address", f"ipc://{tmp_path}/c",
                 "--status-address", f"ipc://{tmp_path}/s", cwd=tmp_path)
    one_line_error(result, "error: --slave-bind tcp://*:5999", "piw-keys master-init",
                   "--open-farm")
    assert not (tmp_path / "out").exists()


def test_piw_keys_makes_enrols_lists_and_revokes(tmp_path):
    master = ["--master-key", "m/master.key_secret"]
    made = run("piw-keys", "master-init", *master, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    master_id = load_key_pair(tmp_path / "m" / "master.key_secret").key_id
    assert f"master key {master_id}" in made.stdout
    assert (tmp_path / "m" / "authorized").stat().st_mode & 0o777 == 0o755
    made = run("piw-keys", "slave-init", "--slave-key", "pi/pi.key_secret", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    pi_id = load_key_pair(tmp_path / "pi" / "pi.key_secret").key_id
    assert f"slave key {pi_id}" in made.stdout and "piw-keys enrol pi.key" in made.stdout
    enrolled = run("piw-keys", "enrol", "pi/pi.key", "--name", "pi4-01", *master, cwd=tmp_path)
    assert enrolled.stdout.startswith(f"enrolled key {pi_id} as pi4-01"), enrolled
    listed = run("piw-keys", "list", *master, cwd=tmp_path).stdout.splitlines()
    assert listed == [f"master key {master_id} (m/master.key_secret)",
                      "1 enrolled key(s) in m/authorized:", f"  {pi_id}  pi4-01"]
    revoked = run("piw-keys", "revoke", pi_id[:8], *master, cwd=tmp_path)
    assert revoked.stdout.startswith(f"revoked key {pi_id} (pi4-01)"), revoked
    assert not list((tmp_path / "m" / "authorized").iterdir())


def test_piw_keys_errors_are_one_line(tmp_path):
    master = ["--master-key", "m/master.key_secret"]
    one_line_error(run("piw-keys", "master-init", cwd=tmp_path), "set --master-key")
    assert run("piw-keys", "master-init", *master, cwd=tmp_path).returncode == 0
    one_line_error(run("piw-keys", "master-init", *master, cwd=tmp_path),
                   "exists already", "--force")
    one_line_error(run("piw-keys", "slave-init", "--slave-key", "pi.key", cwd=tmp_path),
                   "ends in .key_secret")
    assert run("piw-keys", "slave-init", "--slave-key", "pi.key_secret",
               cwd=tmp_path).returncode == 0
    one_line_error(run("piw-keys", "enrol", "pi.key_secret", *master, cwd=tmp_path),
                   "holds a secret key")
    one_line_error(run("piw-keys", "enrol", "nowhere.key", *master, cwd=tmp_path),
                   "does not exist")
    one_line_error(run("piw-keys", "enrol", "pi.key", "--name", "../up", *master,
                       cwd=tmp_path), "--name '../up'")
    assert run("piw-keys", "enrol", "pi.key", *master, cwd=tmp_path).returncode == 0
    one_line_error(run("piw-keys", "enrol", "pi.key", "--name", "again", *master,
                       cwd=tmp_path), "enrolled already")
    one_line_error(run("piw-keys", "revoke", "nobody", *master, cwd=tmp_path),
                   "no enrolled key", "'nobody'")
    one_line_error(run("piw-keys", "list", "extra", cwd=tmp_path), "takes no FILE or ID")
    one_line_error(run("piw-keys", "frobnicate", cwd=tmp_path), "invalid choice")
