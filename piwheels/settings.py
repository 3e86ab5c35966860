"""Every command's configuration as typed, frozen records, validated once at load.

:mod:`piwheels.config` declares every option and its default; argparse
converts each value (from a file, a ``PIW_*`` variable or a flag) and checks
its own range.  Here the parsed options become one frozen record per command
(an admin tool's holds the arguments of its one request too), and the rules
that tie several values together are checked once: a record that exists is
usable, so the supervisor, the slave, the tasks and the tools read typed
fields rather than look names up on a namespace.  Every refusal is one
:class:`~piwheels.errors.ConfigError` line naming the option and what it
accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar
from urllib.parse import urlsplit


from . import cli, config
from .build_policy import BuildPolicy, parse_policy
from .errors import ConfigError, InvalidPolicy
from .keys import check_keys_dir, enrolled_dir, load_key_pair, load_public_key
from .platform_aliases import PlatformAliases
from .transport import CurveClient, CurveServer

_TCP_ADDRESS = re.compile(r"tcp://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+):(?P<port>\d+)")

Record = TypeVar("Record", bound="CheckedRecord")


def flag_of(dest: str) -> str:
    """The option's long flag, for messages (``chunk_size`` → ``--chunk-size``)."""
    return next(flag for flag in config.OPTIONS[dest].flags if flag.startswith("--"))


def check_address(dest: str, value: str, *, bind: bool) -> None:
    """Refuse a ZeroMQ address that cannot be bound (*bind*) or connected to."""
    if value.startswith("ipc://") and len(value) > len("ipc://"):
        return
    match = _TCP_ADDRESS.fullmatch(value)
    if match and 1 <= int(match["port"]) <= 65535 and (bind or match["host"] != "*"):
        return
    raise ConfigError(
        f"{flag_of(dest)} {value!r} is not a ZeroMQ address: use tcp://"
        f"{'HOST|*' if bind else 'HOST'}:PORT (port 1-65535) or ipc://PATH")


def is_loopback(address: str) -> bool:
    """Whether a bind address takes connections from this machine only."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP_ADDRESS.fullmatch(address)
    if not match:
        return False
    host = match["host"].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface or a host name: other machines may reach it


def check_url(dest: str, value: str) -> None:
    """Refuse a URL that is not http(s)://host/..."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{flag_of(dest)} {value!r} is not an http:// or https:// URL")


def require(rule: bool, message: str) -> None:
    """A cross-field rule: *message* names the options and the valid range."""
    if not rule:
        raise ConfigError(message)


@dataclass(frozen=True)
class CheckedRecord:
    """A record whose fields are options of :mod:`piwheels.config`, of the same names.

    Each field is checked by its option's own argparse type when the record
    is made (so one built in code is held to the same ranges as one parsed),
    then :meth:`check` applies the rules that tie fields together.
    """

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            option = config.OPTIONS.get(item.name)
            value = getattr(self, item.name)
            if option is None or option.type is None or value is None:
                continue
            try:
                option.type(str(value))
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"{flag_of(item.name)}: {exc}") from None
        self.check()

    def check(self) -> None:
        """Rules across fields; none by default."""

    @classmethod
    def from_options(cls: type[Record], options: argparse.Namespace,
                     **derived: Any) -> Record:
        """The record of the parsed *options* (plus fields derived from them)."""
        names = {item.name for item in dataclasses.fields(cls)}
        values = {name: getattr(options, name) for name in names if name not in derived}
        # a frozen record holds no mutable list (repeated options come as one)
        values = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in values.items()}
        return cls(**values, **derived)


@dataclass(frozen=True)
class LogSettings(CheckedRecord):
    """What ``-v``, ``-q`` and ``--log-file`` ask of the log."""

    verbose: int = 0
    quiet: bool = False
    log_file: Optional[str] = None


#: Every option piw-master takes.
MASTER_OPTIONS = [
    "dsn", "output_path", "pypi_simple", "pypi_json", "pypi_xmlrpc", "package_allow",
    "package_allow_file", "poll_interval_s", "reconcile_interval_s", "oldest_first",
    "build_policy", "build_prereleases",
    "slave_bind", "file_bind", "public_url", "site_name", "platform_alias",
    "heartbeat_interval_s", "slave_liveness", "sleep_interval_s", "retry_delay_s",
    "queue_interval_s", "build_upstream_wheels",
    "queue_size", "chunk_size", "transfer_window", "transfer_timeout_s", "transfer_retries",
    "transfer_deadline_s", "max_wheel_size", "max_unpacked_size", "max_compression_ratio",
    "handshake_timeout_s", "control_address", "status_address", "min_free_space_mb",
    "stats_interval_s", "summary_interval_s", "master_key", "authorized_keys", "open_farm", "containment",
    "smoke_policy", "verbose", "quiet", "log_file",
]


@dataclass(frozen=True)
class MasterConfig(CheckedRecord):
    """piw-master's configuration; see :mod:`piwheels.config` for each option."""

    dsn: str
    output_path: str
    pypi_simple: str
    pypi_json: str
    pypi_xmlrpc: str
    package_allow: tuple[str, ...]
    package_allow_file: Optional[str]
    poll_interval_s: float
    reconcile_interval_s: float
    oldest_first: bool
    build_policy: str
    build_prereleases: bool
    slave_bind: str
    file_bind: str
    public_url: str
    site_name: str
    heartbeat_interval_s: float
    slave_liveness: int
    sleep_interval_s: float
    retry_delay_s: float
    queue_interval_s: float
    queue_size: int
    chunk_size: int
    transfer_window: int
    transfer_timeout_s: float
    transfer_retries: int
    transfer_deadline_s: float
    max_wheel_size: int
    max_unpacked_size: int
    max_compression_ratio: float
    handshake_timeout_s: float
    control_address: str
    status_address: str
    min_free_space_mb: int
    stats_interval_s: float
    summary_interval_s: float
    master_key: Optional[str] = None
    authorized_keys: Optional[str] = None
    open_farm: bool = False
    containment: str = config.OPTIONS["containment"].default
    smoke_policy: str = config.OPTIONS["smoke_policy"].default
    #: build releases upstream serves an installable wheel of (see --build-upstream-wheels)
    build_upstream_wheels: bool = False
    #: BUILT=ALIAS platform aliases (see --platform-alias); none: off
    platform_alias: tuple[str, ...] = ()
    log: LogSettings = LogSettings()

    @property
    def platform_aliases(self) -> PlatformAliases:
        """The configured platform aliases (checked when the record was made)."""
        return PlatformAliases.parse(self.platform_alias)

    @property
    def enrolled_dir(self) -> Optional[Path]:
        """The authorised-keys directory (None: no keys configured)."""
        if self.master_key is None:
            return None
        return enrolled_dir(self.master_key, self.authorized_keys)

    @property
    def curve(self) -> Optional[CurveServer]:
        """The slave and file sockets' CURVE settings; None: no keys (open or loopback)."""
        if self.master_key is None:
            return None
        return CurveServer(keys=load_key_pair(self.master_key, "--master-key"),
                           enrolled_dir=str(self.enrolled_dir))

    @property
    def containment_required(self) -> bool:
        return self.containment == "required"

    @property
    def policy(self) -> BuildPolicy:
        """The configured build policy (checked when the record was made)."""
        return parse_policy(self.build_policy)

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_space_mb * 2**20

    def check(self) -> None:
        if not self.pypi_simple:
            raise ConfigError("set the upstream index with --pypi-simple (or PIW_PYPI_SIMPLE)")
        check_url("pypi_simple", self.pypi_simple)
        for dest in ("pypi_json", "pypi_xmlrpc"):
            if getattr(self, dest):
                check_url(dest, getattr(self, dest))
        check_url("public_url", self.public_url)
        PlatformAliases.parse(self.platform_alias)
        require(bool(self.dsn), "--dsn must name a database (a libpq/SQLAlchemy URL)")
        require(bool(self.output_path), "--output-path must name a directory")
        for dest in ("slave_bind", "file_bind", "control_address", "status_address"):
            check_address(dest, getattr(self, dest), bind=True)
        addresses = [self.slave_bind, self.file_bind, self.control_address, self.status_address]
        require(len(set(addresses)) == len(addresses),
                "--slave-bind, --file-bind, --control-address and --status-address "
                "must be four different addresses")
        try:
            parse_policy(self.build_policy)
        except InvalidPolicy as exc:
            raise ConfigError(f"--build-policy (build-policy, PIW_BUILD_POLICY): {exc}") from None
        # the master closes a busy slave's TCP connection after this much
        # silence; TCP keepalive counts whole seconds
        silence = self.heartbeat_interval_s * self.slave_liveness
        require(silence >= 1.0,
                f"--heartbeat-interval x --slave-liveness must allow at least 1 second "
                f"of silence, not {silence:g}")
        require(self.transfer_deadline_s >= self.transfer_timeout_s,
                f"--transfer-deadline ({self.transfer_deadline_s:g}) must be at least "
                f"--transfer-timeout ({self.transfer_timeout_s:g})")
        require(self.max_unpacked_size >= self.max_wheel_size,
                f"--max-unpacked-size ({self.max_unpacked_size}) must be at least "
                f"--max-wheel-size ({self.max_wheel_size}): a wheel of stored files "
                "unpacks to about its own size")
        require(self.reconcile_interval_s >= self.poll_interval_s,
                f"--reconcile-interval ({self.reconcile_interval_s:g}) must be at least "
                f"--poll-interval ({self.poll_interval_s:g})")
        require(self.containment in config.CONTAINMENT_CHOICES,
                f"--containment must be one of {', '.join(config.CONTAINMENT_CHOICES)}, "
                f"not {self.containment!r}")
        self.check_keys()

    def check_keys(self) -> None:
        """Keys that load, or (without them) sockets no other machine can reach."""
        if self.master_key is not None:
            require(not self.open_farm, "--open-farm and --master-key exclude each other: "
                                        "with a key only enrolled slaves are taken")
            load_key_pair(self.master_key, "--master-key")
            check_keys_dir(self.enrolled_dir, "--authorized-keys")
            return
        require(self.authorized_keys is None,
                "--authorized-keys needs --master-key (the master's own key pair)")
        if self.open_farm:
            return
        for dest in ("slave_bind", "file_bind"):
            address = getattr(self, dest)
            require(is_loopback(address),
                    f"{flag_of(dest)} {address} takes connections from other machines, but "
                    f"no --master-key is set: make keys with piw-keys master-init, bind to "
                    f"127.0.0.1, or pass --open-farm to take any slave")


#: Every option piw-slave takes.
SLAVE_OPTIONS = [
    "master", "slave_port", "file_port", "label", "build_timeout_s", "work_dir",
    "cache_dir", "lookup_timeout_s", "python", "memory_limit_mb", "max_log_bytes",
    "pid_limit", "disk_limit_mb", "bwrap", "smoke_test", "smoke_timeout_s", "slave_key",
    "master_public_key", "image_salt", "verbose", "quiet", "log_file",
]


@dataclass(frozen=True)
class SlaveConfig(CheckedRecord):
    """piw-slave's configuration; see :mod:`piwheels.config` for each option."""

    master: str
    slave_port: int
    file_port: int
    label: Optional[str]
    build_timeout_s: float
    work_dir: Optional[str]
    cache_dir: Optional[str]
    python: Optional[str]
    memory_limit_mb: int
    max_log_bytes: int
    pid_limit: int
    disk_limit_mb: int
    bwrap: str
    #: 0: no Debian package lookups
    lookup_timeout_s: float = config.OPTIONS["lookup_timeout_s"].default
    slave_key: Optional[str] = None
    master_public_key: Optional[str] = None
    smoke_test: bool = config.OPTIONS["smoke_test"].default
    smoke_timeout_s: float = config.OPTIONS["smoke_timeout_s"].default
    image_salt: str = config.OPTIONS["image_salt"].default
    log: LogSettings = LogSettings()
    #: the file given with -c, if any
    config_file: Optional[str] = None

    @property
    def curve(self) -> Optional[CurveClient]:
        """The sockets' CURVE settings; None: connect without keys."""
        if self.slave_key is None:
            return None
        return CurveClient(keys=load_key_pair(self.slave_key, "--slave-key"),
                           server_public=load_public_key(self.master_public_key,
                                                         "--master-public-key"))

    @property
    def memory_bytes(self) -> int:
        """The address-space limit per build process; 0: none."""
        return self.memory_limit_mb * 2**20

    @property
    def disk_bytes(self) -> int:
        """The most a contained build may write."""
        return self.disk_limit_mb * 2**20

    @property
    def private_paths(self) -> tuple[str, ...]:
        """Paths of the slave's own that no build may see (configuration, keys)."""
        files = [os.path.expanduser(name) for name in config.DEFAULT_CONFIG_FILES]
        if self.config_file:
            files.append(os.path.abspath(self.config_file))
        # and its key files, whichever options name them (``--*-key``)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_key") and isinstance(value, str) and value:
                files.append(os.path.abspath(value))
        return tuple(files)

    def check(self) -> None:
        from .limits import LABEL
        require(bool(self.master.strip()) and not any(c.isspace() for c in self.master),
                f"--master must be a host name or address, not {self.master!r}")
        require(self.slave_port != self.file_port,
                f"--slave-port and --file-port must differ (both are {self.slave_port})")
        require(bool(self.bwrap.strip()), "--bwrap must name a program")
        if self.label is not None:
            require(0 < len(self.label) <= LABEL,
                    f"--label must be 1 to {LABEL} characters, not {len(self.label)}")
        require((self.slave_key is None) == (self.master_public_key is None),
                "--slave-key and --master-public-key go together (this slave's key pair, "
                "and the master's public key to check the master by)")
        if self.slave_key is not None:
            load_key_pair(self.slave_key, "--slave-key")
            load_public_key(self.master_public_key, "--master-public-key")


#: Every option piw-monitor takes.
MONITOR_OPTIONS = ["control_address", "status_address", "request_timeout_s", "log_file"]


@dataclass(frozen=True)
class MonitorConfig(CheckedRecord):
    """piw-monitor's configuration."""

    control_address: str
    status_address: str
    request_timeout_s: float
    log: LogSettings = LogSettings()

    def check(self) -> None:
        for dest in ("control_address", "status_address"):
            check_address(dest, getattr(self, dest), bind=False)


#: Every option piw-initdb takes.
INITDB_OPTIONS = ["dsn", "user", "yes", "upgrade_platform", "verbose", "quiet", "log_file"]


@dataclass(frozen=True)
class InitdbConfig(CheckedRecord):
    """piw-initdb: the database, and the role to grant the master's rights to."""

    dsn: str
    user: str
    yes: bool
    upgrade_platform: str = "linux_armv7l"
    log: LogSettings = LogSettings()

    def check(self) -> None:
        from .connection import database_url
        from .tags import platform_tag_problem
        database_url(self.dsn)
        require(bool(self.user.strip()), "--user must name the master's database role")
        problem = platform_tag_problem(self.upgrade_platform)
        require(problem is None, f"--upgrade-platform: {problem}")


def load(record: type[Record], prog: str, description: str, names: Sequence[str],
         argv: Optional[Sequence[str]], *, console: bool = True) -> Record:
    """Parse, set up logging, and make the validated *record* (ConfigError if not)."""
    return load_with(record, config.make_parser(prog, description, names), argv,
                     console=console)


def load_with(record: type[Record], parser: argparse.ArgumentParser,
              argv: Optional[Sequence[str]], *, console: bool = True) -> Record:
    """:func:`load` with a *parser* of the command's own (an admin tool's arguments)."""
    options = parser.parse_args(argv)
    log = LogSettings(verbose=getattr(options, "verbose", 0) or 0,
                      quiet=bool(getattr(options, "quiet", False)),
                      log_file=getattr(options, "log_file", None))
    cli.configure_logging(log, console=console)
    return record.from_options(options, log=log)
