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


# --- the admin tools' records ----------------------------------------------------------

def client():
    from piwheels import tool_settings
    return tool_settings.ClientSettings(control_address="ipc:///run/piwheels/control",
                                   request_timeout_s=10.0)


@pytest.mark.parametrize("record, fields, limit_name", [
    ("AddConfig", {"package": "x"}, "NAME"),
    ("AddConfig", {"package": "foo", "version": "x"}, "VERSION"),
    ("AddConfig", {"package": "foo", "skip": "x"}, "SKIP_REASON"),
    ("AddConfig", {"package": "foo", "version": "1.0", "yank": "x"}, "REASON"),
    ("AddConfig", {"package": "foo", "alias": "x"}, "NAME"),
    ("RemoveConfig", {"package": "foo", "skip": "x"}, "SKIP_REASON"),
    ("ImportConfig", {"wheels": ("a.whl",), "label": "x"}, "LABEL"),
    ("ImportConfig", {"wheels": ("a.whl",), "label": "me", "abi": "x"}, "TAG"),
    ("ControlConfig", {"action": "build-policy", "project": "x"}, "NAME"),
])
def test_admin_arguments_fit_their_columns(record, fields, limit_name):
    """Each argument's width is its column's (piwheels.limits), not a number of its own."""
    import dataclasses

    from piwheels import limits, tool_settings
    from piwheels.errors import ConfigError
    cls = getattr(tool_settings, record)
    (name, _), = [(k, v) for k, v in fields.items() if v == "x"]
    width = getattr(limits, limit_name)
    good = cls(client=client(), **{**fields, name: "x" * width})
    assert getattr(good, name) == "x" * width
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(good, name, "y")
    with pytest.raises(ConfigError) as info:
        cls(client=client(), **{**fields, name: "x" * (width + 1)})
    flag = dataclasses.fields(cls)[[f.name for f in dataclasses.fields(cls)].index(name)] \
        .metadata["flag"]
    line = str(info.value)
    assert line.startswith(f"{flag} ") and f"length {width + 1} is outside" in line
    assert "\n" not in line and len(line) < 120  # a long value is shown clipped


@pytest.mark.parametrize("fields, message", [
    ({"package": "foo", "yank": ""}, "need a VERSION"),
    ({"package": "foo", "unyank": True}, "need a VERSION"),
    ({"package": "foo", "skip": "why", "unskip": True}, "exclude each other"),
    ({"package": "foo", "skip": "  "}, "--skip needs a REASON"),
    ({"package": "foo", "status_reason": "why"}, "--status-reason goes with --status"),
    ({"package": "foo", "version": "1.0", "status": "archived"}, "whole project"),
    ({"package": "foo", "status": "gone"}, "unknown project status 'gone'"),
    ({"package": "corp-*", "alias": "x"}, "goes with --skip or --unskip only"),
    ({"package": "corp-*"}, "goes with --skip or --unskip only"),
    ({"package": "foo", "version": "1.0,1.1", "skip": "old"}, None),
    ({"package": "foo", "version": "1.0", "yank": "", "alias": "Foo"}, None),
])
def test_piw_add_rules_between_arguments(fields, message):
    from piwheels import tool_settings
    from piwheels.errors import PiwheelsError
    if message is None:
        assert tool_settings.AddConfig(client=client(), **fields).package == fields["package"]
        return
    with pytest.raises(PiwheelsError, match=message):
        tool_settings.AddConfig(client=client(), **fields)


@pytest.mark.parametrize("action, value, project, message", [
    ("min-free-space", None, None, "needs MIB"),
    ("min-free-space", "-1", None, "needs MIB"),
    ("min-free-space", "lots", None, "whole number"),
    ("min-free-space", "0", None, None),
    ("min-free-space", "MAX", None, None),
    ("min-free-space", "MAX+1", None, "at most"),
    ("pause", "5", None, "pause takes no value"),
    ("resume", None, "foo", "--project goes with"),
    ("build-policy", "latest", None, "unknown build policy 'latest'"),
    ("build-policy", "farm", None, "'farm' goes with --project"),
    ("build-policy", "farm", "foo", None),
    ("build-prereleases", "maybe", None, "one of on, off, farm"),
    ("build-prereleases", "farm", None, "'farm' goes with --project"),
    ("explode", None, None, "ACTION 'explode'"),
])
def test_piw_control_values(action, value, project, message):
    from piwheels import protocols, tool_settings
    from piwheels.errors import PiwheelsError
    if value and value.startswith("MAX"):
        value = str(protocols.MAX_FREE_SPACE_MIB + value.count("+1"))
    make = lambda: tool_settings.ControlConfig(client=client(), action=action, value=value,  # noqa
                                          project=project)
    if message is None:
        record = make()
        if action == "min-free-space":
            assert record.mib == int(value)
        return
    with pytest.raises(PiwheelsError, match=message):
        make()


def test_admin_addresses_and_the_database_url_are_checked():
    from piwheels import settings, tool_settings
    from piwheels.errors import ConfigError
    for address in ("garbage", "tcp://*:5555", "tcp://host:0"):
        with pytest.raises(ConfigError, match="--control-address"):
            tool_settings.ClientSettings(control_address=address, request_timeout_s=1.0)
    with pytest.raises(ConfigError, match="--request-timeout"):
        tool_settings.ClientSettings(control_address="ipc:///x", request_timeout_s=0.0)
    with pytest.raises(ConfigError, match="--status-address"):
        tool_settings.RebuildConfig(client=client(), status_address="nowhere", part="home")
    with pytest.raises(ConfigError, match="PKG goes with 'project' only"):
        tool_settings.RebuildConfig(client=client(), status_address="ipc:///s", part="all",
                               package="foo")
    for dsn, message in [("garbage", "cannot parse"), ("mysql://h/db", "needs PostgreSQL")]:
        with pytest.raises(ConfigError, match=message):
            settings.InitdbConfig(dsn=dsn, user="piwheels", yes=True)
    with pytest.raises(ConfigError, match="--user"):
        settings.InitdbConfig(dsn="postgresql:///x", user=" ", yes=True)


def test_a_tools_own_arguments_come_from_its_command_line_only(isolated, monkeypatch, capsys):
    """A shared file's ``label`` (the slave's) or a stray PIW_SKIP must not steer piw-add."""
    conf = isolated / "piwheels.conf"
    conf.write_text("request-timeout = 3\nlabel = builder-1\nskip = from the file\n")
    monkeypatch.setenv("PIW_ALIAS", "from-the-environment")
    monkeypatch.setenv("PIW_CONTROL_ADDRESS", "ipc:///from/env")
    parser = config.make_parser("piw-test", "test", ["control_address", "request_timeout_s"])
    parser.add_argument("--skip")
    parser.add_argument("--alias")
    parser.add_argument("--label")
    options = parser.parse_args(["-c", str(conf)])
    assert (options.request_timeout_s, options.control_address) == (3.0, "ipc:///from/env")
    assert (options.skip, options.alias, options.label) == (None, None, None)
    assert parser.parse_args(["--skip", "given"]).skip == "given"
    assert capsys.readouterr().err.count("unknown key 'skip' ignored") == 1


@pytest.mark.parametrize("action, value, platform, os_release, message", [
    ("add-target", "cp311", "linux_aarch64", None, None),
    ("add-target", "cp311", "linux_aarch64", "Debian 12", None),
    ("retire-target", "cp311", "linux_armv7l", None, None),
    ("add-target", "cp311", None, None, "needs ABI and PLATFORM"),
    ("add-target", "abi3", "linux_aarch64", None, "what a wheel says"),
    ("add-target", "cp311", "any", None, "platform tag 'any'"),
    ("add-target", "cp311", "linux_aarch64", " ", "--os-release needs a release"),
    ("retire-target", "cp311", "linux_aarch64", "Debian 12", "--os-release goes with add-target"),
    ("pause", None, "linux_aarch64", None, "PLATFORM goes with add-target"),
])
def test_piw_control_targets(action, value, platform, os_release, message):
    from piwheels import tool_settings
    from piwheels.errors import PiwheelsError

    def make():
        return tool_settings.ControlConfig(client=client(), action=action, value=value,
                                           platform=platform, os_release=os_release)
    if message is None:
        assert (make().value, make().platform) == (value, platform)
        return
    with pytest.raises(PiwheelsError, match=message):
        make()
