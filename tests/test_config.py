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
    conf.write_text("dsn = postgresql://file/db\nuser = fromfile\nslave-label = ignored\n")
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
