"""piw-keys: make CURVE key pairs, and enrol or revoke the slaves the master takes.

``master-init`` makes the master's pair (``--master-key``) and its
authorised-keys directory; ``slave-init`` makes a slave's (``--slave-key``);
``enrol FILE`` copies a slave's public key file into the master's directory,
``revoke ID|NAME`` removes it, ``list`` shows what is enrolled.  A running
master follows the directory: a new key is taken at its next handshake, a
revoked one is refused at its next message.  Keys are shown by their key id.
"""

from __future__ import annotations

import os
import tempfile
from argparse import Namespace
from pathlib import Path
from typing import Optional, Sequence

from . import cli, config
from .errors import ConfigError, KeyFileError
from .keys import (
    KEY_NAME, PUBLIC_SUFFIX, EnrolledKey, enrolled_dir, key_id, load_key_pair,
    make_key_pair, read_enrolled, read_key_file,
)

COMMANDS = ("master-init", "slave-init", "enrol", "revoke", "list")
#: a key id given in part must be at least this long (to name one key only)
MIN_ID_PREFIX = 6


def _keys_dir(options: Namespace) -> Path:
    directory = enrolled_dir(options.master_key, options.authorized_keys)
    if directory is None:
        raise ConfigError("set --master-key (or --authorized-keys): where the master's "
                          "enrolled keys are")
    return directory


def _require(value: Optional[str], flag: str, what: str) -> Path:
    if not value:
        raise ConfigError(f"set {flag}: {what}")
    return Path(value)


def master_init(options: Namespace) -> str:
    secret = _require(options.master_key, "--master-key",
                      "the file to keep the master's secret key in (NAME.key_secret)")
    pair, public = make_key_pair(secret, force=options.force)
    directory = _keys_dir(options)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    except OSError as exc:
        raise KeyFileError(f"cannot make {directory}: {exc.strerror or exc}") from None
    return (f"master key {pair.key_id}: secret in {secret}, public in {public} (copy it to "
            f"each slave, for --master-public-key); enrolled slave keys go in {directory}")


def slave_init(options: Namespace) -> str:
    secret = _require(options.slave_key, "--slave-key",
                      "the file to keep this slave's secret key in (NAME.key_secret)")
    pair, public = make_key_pair(secret, force=options.force)
    return (f"slave key {pair.key_id}: secret in {secret}, public in {public}; on the "
            f"master, enrol it: piw-keys enrol {public.name} --name {options.name or 'LABEL'}")


def enrol(options: Namespace) -> str:
    source = _require(options.target, "FILE", "the slave's public key file to enrol")
    public, secret = read_key_file(source, "public key file")
    if secret is not None:
        raise KeyFileError(f"{source} holds a secret key: enrol the slave's public key "
                           f"file (NAME{PUBLIC_SUFFIX}), and keep the secret one on the slave")
    directory = _keys_dir(options)
    name = options.name or key_id(public)
    if not KEY_NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                          f"starting with a letter or digit")
    keys, _ = read_enrolled(directory) if directory.is_dir() else ({}, [])
    if public in keys:
        raise ConfigError(f"key {key_id(public)} is enrolled already, as {keys[public].name}")
    target = directory / f"{name}{PUBLIC_SUFFIX}"
    if target.exists():
        raise ConfigError(f"a key is enrolled as {name} already ({target}); choose another "
                          f"--name, or revoke that one first")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=directory, prefix=".enrol-", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(source.read_bytes())
        os.chmod(scratch, 0o644)
        os.replace(scratch, target)
    except OSError as exc:
        raise KeyFileError(f"cannot enrol into {directory}: {exc.strerror or exc}") from None
    return (f"enrolled key {key_id(public)} as {name} ({target}); the master takes it at "
            f"its next connection")


def _matches(key: EnrolledKey, ident: str) -> bool:
    ident = ident.lower()
    return key.name == ident or key.key_id == ident or (
        len(ident) >= MIN_ID_PREFIX and key.key_id.startswith(ident))


def revoke(options: Namespace) -> str:
    ident = _require(options.target, "ID", "the key id or name to revoke")
    directory = _keys_dir(options)
    keys, _ = read_enrolled(directory)
    found = [key for key in keys.values() if _matches(key, str(ident))]
    if not found:
        raise ConfigError(f"no enrolled key has the id or name {str(ident)!r} (piw-keys list)")
    if len(found) > 1:
        raise ConfigError(f"{str(ident)!r} names {len(found)} keys "
                          f"({', '.join(k.name for k in found)}); give the whole key id")
    key = found[0]
    try:
        key.path.unlink()
    except OSError as exc:
        raise KeyFileError(f"cannot revoke {key.path}: {exc.strerror or exc}") from None
    return (f"revoked key {key.key_id} ({key.name}); the master refuses it from its next "
            f"message")


def list_keys(options: Namespace) -> str:
    lines = []
    if options.master_key and Path(options.master_key).exists():
        lines.append(f"master key {load_key_pair(options.master_key, '--master-key').key_id}"
                     f" ({options.master_key})")
    if options.slave_key and Path(options.slave_key).exists():
        lines.append(f"slave key {load_key_pair(options.slave_key, '--slave-key').key_id}"
                     f" ({options.slave_key})")
    directory = enrolled_dir(options.master_key, options.authorized_keys)
    if directory is not None:
        keys, problems = read_enrolled(directory)
        lines.append(f"{len(keys)} enrolled key(s) in {directory}:")
        for key in sorted(keys.values(), key=lambda k: k.name):
            lines.append(f"  {key.key_id}  {key.name}")
        lines.extend(f"  ignored: {problem}" for problem in problems)
    if not lines:
        raise ConfigError("no keys configured: set --master-key or --slave-key")
    return "\n".join(lines)


ACTIONS = {"master-init": master_init, "slave-init": slave_init, "enrol": enrol,
           "revoke": revoke, "list": list_keys}


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-keys", __doc__.splitlines()[0],
        ["master_key", "authorized_keys", "slave_key", "verbose", "quiet", "log_file"])
    parser.add_argument("command", choices=COMMANDS,
                        help="master-init | slave-init | enrol FILE | revoke ID|NAME | list")
    parser.add_argument("target", nargs="?", metavar="FILE|ID",
                        help="enrol: the slave's public key file; revoke: its key id "
                             f"(or {MIN_ID_PREFIX}+ first digits of it) or name")
    parser.add_argument("--name", metavar="NAME",
                        help="enrol: the name to enrol the key under (default: its key id)")
    parser.add_argument("--force", action="store_true",
                        help="master-init, slave-init: replace an existing key pair")
    options = parser.parse_args(argv)
    if options.target is not None and options.command not in ("enrol", "revoke"):
        parser.error(f"{options.command} takes no FILE or ID")
    cli.configure_logging(options)
    print(ACTIONS[options.command](options))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
