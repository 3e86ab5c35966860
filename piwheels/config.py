"""Every option of every piwheels command, with its default, in one place.

Each command asks :func:`make_parser` for the options it uses by name.  The
values come, lowest priority first, from these defaults, the configuration
files (``/etc/piwheels.conf``, ``~/.config/piwheels/piwheels.conf``, then
``-c FILE``), ``PIW_*`` environment variables, and finally the command line.
One configuration file can serve every command: keys that a command does not
use are ignored, and a key no command knows (a misspelling, most likely) is
ignored with a warning naming it and its file.  A misspelt flag on the command
line stays an error.  :mod:`piwheels.settings` turns the parsed options of
the daemons into typed, validated records.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import configargparse

from . import __version__
from .option_values import (
    nonnegative_float, nonnegative_int, port_number, positive_float, positive_int,
    positive_int_up_to,
)
from .protocols import ENVELOPE_BYTES, MAX_CHUNK_BYTES, MAX_LOG_CHARS
from .smoke import SMOKE_POLICIES

DEFAULT_CONFIG_FILES = (
    "/etc/piwheels.conf",
    "~/.config/piwheels/piwheels.conf",
)
ENV_PREFIX = "PIW_"
#: --containment's values
CONTAINMENT_CHOICES = ("required", "optional")


@dataclass(frozen=True)
class Option:
    """One command-line option, shared by every command that uses it."""

    flags: tuple[str, ...]
    dest: str
    help: str
    default: Any = None
    type: Optional[Callable[[str], Any]] = None
    metavar: Optional[str] = None
    action: Optional[str] = None
    choices: Optional[tuple[str, ...]] = None
    extra: dict = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help, **self.extra}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.action not in ("store_true", "store_false", "count"):
            if self.type is not None:
                kwargs["type"] = self.type
            if self.metavar is not None:
                kwargs["metavar"] = self.metavar
            if self.choices is not None:
                kwargs["choices"] = self.choices
        kwargs["default"] = self.default
        parser.add_argument(*self.flags, **kwargs)


_OPTIONS = [
    # --- database --------------------------------------------------------
    Option(
        ("--dsn",), "dsn",
        "the database to use, as an SQLAlchemy/libpq URL",
        default="postgresql:///piwheels", metavar="URL",
    ),
    Option(
        ("--user",), "user",
        "the database role the master connects as; piw-initdb grants it "
        "only the rights the master needs",
        default="piwheels", metavar="ROLE",
    ),
    Option(
        ("-y", "--yes"), "yes",
        "answer yes to every question (do not ask before changing anything)",
        default=False, action="store_true",
    ),
    Option(
        ("--upgrade-platform",), "upgrade_platform",
        "upgrading to schema 5: the platform tag of the build ABIs that no wheel "
        "of the farm names a platform for (docs/database.rst)",
        default="linux_armv7l", metavar="TAG",
    ),
    # --- master ------------------------------------------------------------
    Option(
        ("--output-path",), "output_path",
        "where the static index (simple/, project/, logs/) is written",
        default="/var/www/piwheels", metavar="DIR",
    ),
    Option(
        ("--public-url",), "public_url",
        "the address the output is served at, for install instructions and the sitemap",
        default="http://localhost/", metavar="URL",
    ),
    Option(
        ("--site-name",), "site_name",
        "the farm's name on its pages",
        default="piwheels", metavar="NAME",
    ),
    Option(
        ("--platform-alias",), "platform_alias",
        "also publish every wheel built for platform BUILT under the name it would "
        "have for ALIAS (the same file, hard-linked, listed with its own hash), e.g. "
        "linux_armv7l=linux_armv6l for Raspberry Pi Zero and 1 boards; repeat for "
        "more; a real build of the alias name wins; none: no aliases",
        default=[], action="append", metavar="BUILT=ALIAS",
    ),
    Option(
        ("--pypi-simple",), "pypi_simple",
        "the upstream simple index URL that slaves build from (required)",
        default=None, metavar="URL",
    ),
    Option(
        ("--pypi-json",), "pypi_json",
        "the upstream JSON API base URL (<URL><project>/json); empty: read projects "
        "from the simple API instead",
        default="", metavar="URL",
    ),
    Option(
        ("--pypi-xmlrpc",), "pypi_xmlrpc",
        "the upstream XML-RPC URL for the change feed; empty: follow by reconciling "
        "the simple API only",
        default="", metavar="URL",
    ),
    Option(
        ("--package-allow",), "package_allow",
        "follow and build only projects matching this pattern (shell-style, on "
        "canonical names); repeat for more; none: every project",
        default=[], action="append", metavar="PATTERN",
    ),
    Option(
        ("--package-allow-file",), "package_allow_file",
        "read more allow patterns from this file, one per line (# comments)",
        default=None, metavar="FILE",
    ),
    Option(
        ("--poll-interval",), "poll_interval_s",
        "seconds between looks at the upstream change feed",
        default=10.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--reconcile-interval",), "reconcile_interval_s",
        "seconds between reconciliations with the simple API (when the change feed "
        "is off or failing, this is how often the master looks upstream)",
        default=300.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--oldest-first",), "oldest_first",
        "build the oldest pending releases first (default: newest first)",
        default=False, action="store_true",
    ),
    Option(
        ("--build-policy",), "build_policy",
        "which releases the farm builds: all, newest:N, since:YYYY-MM-DD or "
        "versions:V1,V2,...; a change made at run time (piw-control build-policy) stays "
        "in force across restarts until this setting itself changes",
        default="all", metavar="SPEC",
    ),
    Option(
        ("--build-prereleases",), "build_prereleases",
        "build pre-releases too (yanked releases are never built)",
        default=False, action="store_true",
    ),
    Option(
        ("--slave-bind",), "slave_bind",
        "the ZeroMQ address the master takes slave connections on",
        default="tcp://*:5555", metavar="ADDR",
    ),
    Option(
        ("--file-bind",), "file_bind",
        "the ZeroMQ address the master takes file transfers on",
        default="tcp://*:5556", metavar="ADDR",
    ),
    Option(
        ("--control-address",), "control_address",
        "the ZeroMQ address of the master's control socket (admin tools, monitor); "
        "an ipc socket is made readable only by the master's user and group",
        default="ipc:///run/piwheels/control", metavar="ADDR",
    ),
    Option(
        ("--status-address",), "status_address",
        "the ZeroMQ address the master publishes its status on (monitor)",
        default="ipc:///run/piwheels/status", metavar="ADDR",
    ),
    Option(
        ("--min-free-space",), "min_free_space_mb",
        "hold new builds while the output directory has less free space than this, in MiB",
        default=1024, type=nonnegative_int, metavar="MiB",
    ),
    Option(
        ("--stats-interval",), "stats_interval_s",
        "seconds between refreshes of the farm's statistics",
        default=10.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--summary-interval",), "summary_interval_s",
        "seconds between rewrites of the pages that sum up the whole index (the simple "
        "root, packages.json, the sitemap, the home page, the failures page): each is "
        "rewritten at most this often, however many builds arrive",
        default=5.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--heartbeat-interval",), "heartbeat_interval_s",
        "seconds between a busy slave's heartbeats",
        default=3.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--slave-liveness",), "slave_liveness",
        "heartbeats a slave may miss before the master drops it and re-queues its build",
        default=3, type=positive_int, metavar="N",
    ),
    Option(
        ("--sleep-interval",), "sleep_interval_s",
        "seconds an idle slave waits before asking again while builds are held (paused, "
        "disk full, recorder behind); with nothing to build it is parked instead and "
        "handed a build as soon as one is queued",
        default=5.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--retry-delay",), "retry_delay_s",
        "a release whose build failed goes to another builder of its ABI first; the "
        "builder that failed it gets it again only after this many seconds (the "
        "second failure counts)",
        default=6 * 3600.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--queue-interval",), "queue_interval_s",
        "seconds between full recalculations of the build queue",
        default=60.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--build-upstream-wheels",), "build_upstream_wheels",
        "build a release for an ABI even when the upstream index already serves a wheel "
        "that ABI's builder can install (default: skip it); a built wheel whose name "
        "upstream serves with other bytes is never published either way",
        default=False, action="store_true",
    ),
    Option(
        ("--queue-size",), "queue_size",
        "how many pending builds per ABI the slave driver keeps at hand",
        default=1000, type=positive_int, metavar="N",
    ),
    Option(
        ("--chunk-size",), "chunk_size",
        f"bytes per file-transfer chunk (at most {MAX_CHUNK_BYTES}); no frame larger "
        "than this is accepted on the file socket",
        default=1024 * 1024, type=positive_int_up_to(MAX_CHUNK_BYTES), metavar="BYTES",
    ),
    Option(
        ("--transfer-window",), "transfer_window",
        "file-transfer chunks in flight at once",
        default=4, type=positive_int, metavar="N",
    ),
    Option(
        ("--transfer-timeout",), "transfer_timeout_s",
        "seconds to wait for a requested chunk before asking again",
        default=10.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--transfer-retries",), "transfer_retries",
        "times a chunk or a whole file is fetched again before the transfer fails",
        default=3, type=positive_int, metavar="N",
    ),
    Option(
        ("--transfer-deadline",), "transfer_deadline_s",
        "seconds a whole file transfer may take; a slower one is abandoned and its "
        "build queued again",
        default=600.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--max-wheel-size",), "max_wheel_size",
        "the largest wheel the master accepts, in bytes",
        default=1024 * 1024 * 1024, type=positive_int, metavar="BYTES",
    ),
    Option(
        ("--max-unpacked-size",), "max_unpacked_size",
        "the most bytes all the files in a wheel may unpack to (a zip bomb is refused)",
        default=4 * 1024 * 1024 * 1024, type=positive_int, metavar="BYTES",
    ),
    Option(
        ("--max-compression-ratio",), "max_compression_ratio",
        "how many times its compressed size a wheel, or a file in it larger than "
        "1 MiB, may unpack to",
        default=100.0, type=positive_float, metavar="RATIO",
    ),
    Option(
        ("--master-key",), "master_key",
        "the master's CURVE secret key file (made by piw-keys master-init); slaves "
        "must then have their keys enrolled. Unset: no keys, and the slave and file "
        "sockets may bind to loopback addresses only, unless --open-farm",
        default=None, metavar="FILE",
    ),
    Option(
        ("--authorized-keys",), "authorized_keys",
        "the directory of the enrolled slaves' public key files (NAME.key), re-read "
        "when it changes; default: authorized/ beside --master-key",
        default=None, metavar="DIR",
    ),
    Option(
        ("--open-farm",), "open_farm",
        "take slaves without keys on any address: anyone who reaches the ports can "
        "build and upload (such slaves build only for ABIs the farm knows already)",
        default=False, action="store_true",
    ),
    Option(
        ("--smoke-policy",), "smoke_policy",
        "what to do with a wheel whose smoke test failed (its builder installed it "
        "offline into a fresh venv and its import failed): warn: publish it with a "
        "warning on its project page and JSON; hold: do not publish it (the attempt is "
        "recorded as failed, cause smoke-import)",
        default="warn", choices=SMOKE_POLICIES,
    ),
    Option(
        ("--containment",), "containment",
        "required: refuse slaves whose builds are not contained (no namespaces); "
        "optional: take them (default: required when the master runs on Linux)",
        default="required" if sys.platform.startswith("linux") else "optional",
        choices=CONTAINMENT_CHOICES,
    ),
    Option(
        ("--handshake-timeout",), "handshake_timeout_s",
        "seconds a new connection to the slave or file socket has to complete "
        "ZeroMQ's handshake before the master closes it (idle connections hold "
        "file descriptors)",
        default=10.0, type=positive_float, metavar="SECS",
    ),
    # --- slave -------------------------------------------------------------
    Option(
        ("--master",), "master",
        "the host name or address of the master",
        default="localhost", metavar="HOST",
    ),
    Option(
        ("--slave-port",), "slave_port",
        "the master's port for slave connections",
        default=5555, type=port_number, metavar="PORT",
    ),
    Option(
        ("--file-port",), "file_port",
        "the master's port for file transfers",
        default=5556, type=port_number, metavar="PORT",
    ),
    Option(
        ("--slave-key",), "slave_key",
        "this slave's CURVE secret key file (made by piw-keys slave-init); unset: "
        "connect without keys (only an open or loopback-only master takes that)",
        default=None, metavar="FILE",
    ),
    Option(
        ("--master-public-key",), "master_public_key",
        "the master's public key file (its master.key), copied from the master",
        default=None, metavar="FILE",
    ),
    Option(
        ("--label",), "label",
        "a name for this slave, shown in the monitor and build records (default: host name)",
        default=None, metavar="NAME",
    ),
    Option(
        ("--timeout",), "build_timeout_s",
        "seconds a build may run before it is killed with all its processes",
        default=3 * 60 * 60, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--dir",), "work_dir",
        "where builds run (each in a fresh temporary directory) (default: the system temp dir)",
        default=None, metavar="DIR",
    ),
    Option(
        ("--cache-dir",), "cache_dir",
        "where pip keeps build dependencies between builds (default: DIR/piwheels-cache)",
        default=None, metavar="DIR",
    ),
    Option(
        ("--lookup-timeout",), "lookup_timeout_s",
        "seconds one look-up of the Debian package a failed build lacks may take (dpkg -S, "
        "apt-file, outside the sandbox; cached in the cache dir) (0: name no package)",
        default=120.0, type=nonnegative_float, metavar="SECS",
    ),
    Option(
        ("--python",), "python",
        "the Python interpreter to build with (one slave per ABI) (default: this one)",
        default=None, metavar="PATH",
    ),
    Option(
        ("--memory-limit",), "memory_limit_mb",
        "address-space limit for each build process in MiB (0: none)",
        default=4096, type=nonnegative_int, metavar="MiB",
    ),
    Option(
        ("--pid-limit",), "pid_limit",
        "the most processes (threads count) one build may run at once, beyond those "
        "this user already runs (0: no limit)",
        default=512, type=nonnegative_int, metavar="N",
    ),
    Option(
        ("--disk-limit",), "disk_limit_mb",
        "the most a contained build may write, in MiB: its build dir and /tmp are "
        "one tmpfs of this size (so held in memory or swap), and its wheels count too",
        default=4096, type=positive_int, metavar="MiB",
    ),
    Option(
        ("--bwrap",), "bwrap",
        "the bubblewrap program that contains builds (Debian package bubblewrap); where "
        "it is missing or cannot make namespaces, builds run uncontained and HELLO says so",
        default="bwrap", metavar="PATH",
    ),
    Option(
        ("--no-smoke-test",), "smoke_test",
        "do not smoke-test built wheels (install offline into a fresh venv, import the "
        "top-level modules); the master then shows them as not tested",
        default=True, action="store_false",
    ),
    Option(
        ("--smoke-timeout",), "smoke_timeout_s",
        "seconds the smoke test of one wheel may take before it is killed and failed",
        default=60.0, type=positive_float, metavar="SECS",
    ),
    Option(
        ("--image-salt",), "image_salt",
        "text added to this builder's image digest: say a change the digest cannot see "
        "(a library built into /usr/local) by changing it; a new image is offered again "
        "the builds a changed builder may fix (tests use it to present two images)",
        default="", metavar="TEXT",
    ),
    Option(
        ("--max-log-size",), "max_log_bytes",
        f"the most bytes of a build log kept (its head and tail; at most "
        f"{MAX_LOG_CHARS - ENVELOPE_BYTES})",
        default=1024 * 1024, type=positive_int_up_to(MAX_LOG_CHARS - ENVELOPE_BYTES),
        metavar="BYTES",
    ),
    # --- admin tools and monitor ---------------------------------------------
    Option(
        ("--request-timeout",), "request_timeout_s",
        "seconds to wait for the master to answer",
        default=10.0, type=positive_float, metavar="SECS",
    ),
    # --- logging -----------------------------------------------------------
    Option(
        ("-v", "--verbose"), "verbose",
        "say more about what is happening (repeat for debug output)",
        default=0, action="count",
    ),
    Option(
        ("-q", "--quiet"), "quiet",
        "only report warnings and errors",
        default=False, action="store_true",
    ),
    Option(
        ("--log-file",), "log_file",
        "also write the log, at debug level, to this file",
        default=None, metavar="FILE",
    ),
]

OPTIONS: dict[str, Option] = {option.dest: option for option in _OPTIONS}


class OneLineErrorParser(configargparse.ArgumentParser):
    """A parser whose usage errors are one line: what is wrong, and where help is.

    Only the declared options (:data:`OPTIONS`) come from configuration files
    and ``PIW_*`` variables; a command's own arguments (piw-add's ``--skip``,
    say) say what to do this once, so they come from its command line alone.
    """

    def get_possible_config_keys(self, action: argparse.Action) -> list[str]:
        if action.dest not in getattr(self, "configurable", ()):
            return []
        return super().get_possible_config_keys(action)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None, **kwargs):
        """Parse as configargparse does, first warning of unknown config-file keys.

        A key no piwheels command knows is likelier a misspelling than a
        setting for another command; it is ignored, but said once, here, so
        the operator sees it even when the command then only shows --help.
        """
        argv = list(sys.argv[1:] if args is None else args)
        for source, key in unknown_config_keys(self, argv):
            print(f"{self.prog}: warning: {source}: unknown key {key!r} ignored "
                  f"(no piwheels option has this name)", file=sys.stderr)
        return super().parse_args(argv, namespace, **kwargs)


def default_of(dest: str):
    """The default of the option that sets *dest* (for callers that need it outside
    a parser, such as the quick start)."""
    for option in _OPTIONS:
        if option.dest == dest:
            return option.default
    raise KeyError(dest)


def known_config_keys() -> frozenset[str]:
    """Every key a configuration file may set, for any piwheels command."""
    keys = {"config"}
    for option in _OPTIONS:
        keys.update(flag[2:] for flag in option.flags if flag.startswith("--"))
    return frozenset(keys)


def unknown_config_keys(parser: configargparse.ArgumentParser,
                        argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(file, key)`` for each key in the config files *argv* reads that no option has.

    The files are found and read as configargparse itself finds and reads
    them; one that cannot be opened or parsed is left for it to report.
    """
    known = known_config_keys()
    found: list[tuple[str, str]] = []
    try:
        streams = parser._open_config_files(list(argv))
    except (SystemExit, Exception):  # configargparse reports it in parse_args
        return found
    for entry in streams:
        stream, source = entry if isinstance(entry, tuple) else (entry, getattr(entry, "name", "?"))
        try:
            items = parser._config_file_parser.parse(stream)
        except Exception:  # a malformed file: configargparse says so
            continue
        finally:
            stream.close()
        found.extend((source, key) for key in items
                     if key not in known and key.lstrip("-") not in known)
    return found


def make_parser(
    prog: str, description: str, options: Iterable[str]
) -> configargparse.ArgumentParser:
    """A parser for *prog* that knows the named *options* and the config sources."""
    parser = OneLineErrorParser(
        prog=prog,
        description=description,
        default_config_files=list(DEFAULT_CONFIG_FILES),
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="read options from this configuration file",
        auto_env_var_prefix=ENV_PREFIX,
        ignore_unknown_config_file_keys=True,
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    for name in options:
        try:
            OPTIONS[name].add_to(parser)
        except KeyError:
            raise ValueError(f"unknown option {name!r}; declare it in piwheels.config") from None
    parser.configurable = frozenset(options)
    return parser
