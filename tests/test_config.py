"""Configuration: defaults, files, PIW_* variables and flags, in that order of priority."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from piwheels import __version__, config

OPTIONS = ["dsn", "user", "yes", "verbose"]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real config files or PIW_* variables leak into a test."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(tmp_path / "none.conf"),))
    for name in list(__import__("os").environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    return tmp_path


def parse(*args):
    return config.make_parser("piw-test", "test", OPTIONS).parse_args(list(args))


def test_defaults(isolated):
    args = parse()
    assert args.dsn == config.OPTIONS["dsn"].default
    assert args.user == "piwheels"
    assert args.yes is False


def test_file_then_env_then_flag(isolated, monkeypatch):
    conf = isolated / "piwheels.conf"
    conf.write_text("dsn = postgresql://file/db\nuser = fromfile\nlabel = not-this-commands\n")
    assert parse("-c", str(conf)).dsn == "postgresql://file/db"
    monkeypatch.setenv("PIW_DSN", "postgresql://env/db")
    args = parse("-c", str(conf))
    assert (args.dsn, args.user) == ("postgresql://env/db", "fromfile")
    assert parse("-c", str(conf), "--dsn", "postgresql://flag/db").dsn == "postgresql://flag/db"


def test_default_config_file_is_read(isolated, monkeypatch):
    conf = isolated / "etc.conf"
    conf.write_text("user = etcuser\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(conf),))
    assert parse().user == "etcuser"


def test_env_flag_for_switch(isolated, monkeypatch):
    monkeypatch.setenv("PIW_YES", "true")
    assert parse().yes is True


def test_unknown_option_name_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown option 'nope'"):
        config.make_parser("piw-test", "test", ["nope"])


def test_help_lists_options_with_defaults():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "piw-initdb"), "--help"],
        capture_output=True, text=True, check=True,
    )
    for flag in ("--dsn", "--user", "--yes", "--config", "--version"):
        assert flag in result.stdout
    assert "postgresql:///piwheels" in result.stdout
    assert "PIW_DSN" in result.stdout


def test_version_flag():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "piw-initdb"), "--version"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"piw-initdb {__version__}"


@pytest.mark.parametrize("flag, limit", [("--chunk-size", "MAX_CHUNK_BYTES"),
                                         ("--max-log-size", None)])
def test_sizes_the_protocol_caps_are_refused_above_the_cap(isolated, capsys, flag, limit):
    from piwheels import protocols
    dest = {"--chunk-size": "chunk_size", "--max-log-size": "max_log_bytes"}[flag]
    cap = (getattr(protocols, limit) if limit else
           protocols.MAX_LOG_CHARS - protocols.ENVELOPE_BYTES)
    parser = config.make_parser("piw-test", "test", [dest])
    assert getattr(parser.parse_args([flag, str(cap)]), dest) == cap
    with pytest.raises(SystemExit):
        parser.parse_args([flag, str(cap + 1)])
    assert f"must be from 1 to {cap}, not {cap + 1}" in capsys.readouterr().err


# --- typed records (piwheels.settings) ----------------------------------------------

def load_master(isolated, *args):
    from piwheels import settings
    return settings.MasterConfig.from_options(
        config.make_parser("piw-test", "test", settings.MASTER_OPTIONS).parse_args(
            # the default binds take other machines: without keys, only an open farm may
            ["--pypi-simple", "http://127.0.0.1:9/simple/", "--open-farm", *args]),
        log=settings.LogSettings())


def test_master_record_holds_the_parsed_and_default_values(isolated):
    import dataclasses

    from piwheels.build_policy import parse_policy
    record = load_master(isolated, "--chunk-size", "4096", "--package-allow", "foo*")
    assert record.chunk_size == 4096
    assert record.min_free_space_mb == config.OPTIONS["min_free_space_mb"].default
    assert record.min_free_bytes == record.min_free_space_mb * 2**20
    assert record.package_allow == ("foo*",)
    assert record.policy == parse_policy("all")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.chunk_size = 1  # type: ignore[misc]


def test_a_record_made_in_code_is_held_to_the_same_ranges(isolated):
    import dataclasses

    from piwheels import protocols
    from piwheels.errors import ConfigError
    good = load_master(isolated)
    for field, value, text in [("chunk_size", protocols.MAX_CHUNK_BYTES + 1, "--chunk-size"),
                               ("min_free_space_mb", -1, "--min-free-space"),
                               ("transfer_window", 0, "--transfer-window"),
                               ("transfer_timeout_s", 0.0, "--transfer-timeout"),
                               ("slave_bind", "tcp://host", "--slave-bind")]:
        with pytest.raises(ConfigError, match=text):
            dataclasses.replace(good, **{field: value})
    # the edges themselves are allowed
    dataclasses.replace(good, chunk_size=protocols.MAX_CHUNK_BYTES, min_free_space_mb=0)


@pytest.mark.parametrize("changes, message", [
    ({"heartbeat_interval_s": 0.3, "slave_liveness": 3}, "at least 1 second"),
    ({"heartbeat_interval_s": 0.5, "slave_liveness": 2}, None),
    ({"transfer_timeout_s": 20.0, "transfer_deadline_s": 19.0}, "--transfer-deadline"),
    ({"transfer_timeout_s": 20.0, "transfer_deadline_s": 20.0}, None),
    ({"max_wheel_size": 10, "max_unpacked_size": 9}, "--max-unpacked-size"),
    ({"poll_interval_s": 5.0, "reconcile_interval_s": 4.0}, "--reconcile-interval"),
    ({"file_bind": "tcp://*:5555"}, "four different addresses"),
    ({"pypi_simple": ""}, "--pypi-simple"),
])
def test_cross_field_rules(isolated, changes, message):
    import dataclasses

    from piwheels.errors import ConfigError
    good = load_master(isolated)
    if message is None:
        dataclasses.replace(good, **changes)
    else:
        with pytest.raises(ConfigError, match=message) as info:
            dataclasses.replace(good, **changes)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("address, bind, ok", [
    ("tcp://*:5555", True, True), ("tcp://127.0.0.1:1", True, True),
    ("tcp://[::1]:5555", True, True), ("ipc:///run/piwheels/control", True, True),
    ("tcp://*:5555", False, False), ("tcp://host:0", True, False),
    ("tcp://host:65536", True, False), ("tcp://host", True, False),
    ("ipc://", True, False), ("udp://host:5", True, False), ("garbage", True, False),
])
def test_addresses(address, bind, ok):
    from piwheels import settings
    from piwheels.errors import ConfigError
    if ok:
        settings.check_address("slave_bind", address, bind=bind)
    else:
        with pytest.raises(ConfigError, match="--slave-bind"):
            settings.check_address("slave_bind", address, bind=bind)


def test_every_option_is_a_known_config_key():
    keys = config.known_config_keys()
    for option in config.OPTIONS.values():
        assert any(flag[2:] in keys for flag in option.flags if flag.startswith("--"))
    assert "chunk-sise" not in keys


def test_unknown_keys_are_warned_of_once_each_with_their_file(isolated, capsys):
    conf = isolated / "piwheels.conf"
    conf.write_text("dsn = postgresql://file/db\nchunk-sise = 1\ntimeout = 5\n# note\n")
    assert parse("-c", str(conf)).dsn == "postgresql://file/db"
    err = capsys.readouterr().err.splitlines()
    # timeout is the slave's: known to piwheels, so not warned of by another command
    assert err == [f"piw-test: warning: {conf}: unknown key 'chunk-sise' ignored "
                   "(no piwheels option has this name)"]
