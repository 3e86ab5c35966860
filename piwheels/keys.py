"""CURVE key pairs and the directory of enrolled slave keys.

Keys are ZeroMQ certificate files as :mod:`zmq.auth` writes and reads them:
``NAME.key`` holds a public key, ``NAME.key_secret`` the pair.  A slave is
*enrolled* when its public key file is in the master's authorised-keys
directory (like ssh's ``authorized_keys``); :class:`EnrolledKeys` re-reads
that directory when it changes, so enrolling or revoking needs no restart.
A key is shown everywhere by its :func:`key_id`, a short fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import zmq
import zmq.auth
from zmq.utils import z85

from .errors import ConfigError, KeyFileError

log = logging.getLogger("piwheels.keys")

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
#: hex digits of a key id (64 bits of the public key's SHA-256)
KEY_ID_LENGTH = 16
#: a name under which a key is enrolled (its file name without .key)
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: the authorised-keys directory's name beside the master's key, unless configured
AUTHORIZED_DIR = "authorized"
#: how often the enrolled keys' files are compared in full (a key file edited
#: in place does not change its directory); a file added or removed is seen
#: at the next look
FULL_RECHECK_S = 2.0


@dataclass(frozen=True)
class KeyPair:
    """One side's CURVE keys, Z85-encoded as ZeroMQ takes them."""

    public: bytes
    secret: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public)


def key_id(public: bytes | str) -> str:
    """The short, stable fingerprint of a Z85 public key: what tools, logs and the
    monitor show (hex, from the SHA-256 of the raw 32-byte key)."""
    try:
        raw = z85.decode(public.encode("ascii") if isinstance(public, str) else bytes(public))
    except (ValueError, KeyError, IndexError, TypeError, UnicodeError):
        raise ValueError("not a Z85-encoded key") from None
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


def _valid_z85_key(value: Optional[bytes]) -> bool:
    if value is None or len(value) != 40:
        return False
    try:
        return len(z85.decode(value)) == 32
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def read_key_file(path: Path, what: str) -> tuple[bytes, Optional[bytes]]:
    """(public, secret or None) of a certificate file, or one line saying why not."""
    if not path.exists():
        raise KeyFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise KeyFileError(f"{what} {path} is not a file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except ValueError:
        raise KeyFileError(f"{what} {path} holds no public key (not a key file made by "
                           f"piw-keys)") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if not _valid_z85_key(public):
        raise KeyFileError(f"{what} {path}: its public key is not a 40-character Z85 key")
    if secret is not None and not _valid_z85_key(secret):
        raise KeyFileError(f"{what} {path}: its secret key is not a 40-character Z85 key")
    return public, secret


def load_key_pair(path: Path | str, what: str = "key file") -> KeyPair:
    """The pair in a secret key file; refused, like ssh refuses a private key,
    when anyone but its owner may read or write it."""
    path = Path(path)
    public, secret = read_key_file(path, what)
    if secret is None:
        raise KeyFileError(f"{what} {path} holds only a public key; name the "
                           f"{SECRET_SUFFIX} file")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{what} {path} is open to others (mode {mode:04o}): the secret key "
                           f"must be readable by its owner only; chmod 600 {path}")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{what} {path}: its public and secret keys do not belong together")
    return KeyPair(public=public, secret=secret)


def load_public_key(path: Path | str, what: str = "public key file") -> bytes:
    """The public key in a key file (Z85)."""
    return read_key_file(Path(path), what)[0]


def public_path(secret_path: Path) -> Path:
    """The public key file beside a secret one (``x.key_secret`` → ``x.key``)."""
    return secret_path.with_name(secret_path.name[:-len(SECRET_SUFFIX)] + PUBLIC_SUFFIX)


def make_key_pair(secret_path: Path | str, *, force: bool = False) -> tuple[KeyPair, Path]:
    """Write a new pair: *secret_path* (mode 600) and its public file beside it (644).

    The files are made in a private directory and renamed into place, so the
    secret key is never readable by others, not even for a moment.
    """
    secret_path = Path(secret_path)
    if not secret_path.name.endswith(SECRET_SUFFIX) or secret_path.name == SECRET_SUFFIX:
        raise KeyFileError(f"{secret_path}: a secret key file's name ends in {SECRET_SUFFIX}")
    public_file = public_path(secret_path)
    existing = [p for p in (secret_path, public_file) if p.exists()]
    if existing and not force:
        raise KeyFileError(f"{existing[0]} exists already; pass --force to replace it (the "
                           f"old key stops working everywhere)")
    parent = secret_path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        scratch = Path(tempfile.mkdtemp(dir=parent, prefix=".piw-keys-"))
    except OSError as exc:
        raise KeyFileError(f"cannot write keys in {parent}: {exc.strerror or exc}") from None
    old_umask = os.umask(0o077)
    try:
        made_public, made_secret = zmq.auth.create_certificates(scratch, "new")
        os.chmod(made_public, 0o644)
        os.replace(made_secret, secret_path)
        os.replace(made_public, public_file)
    except OSError as exc:
        raise KeyFileError(f"cannot write keys in {parent}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return load_key_pair(secret_path), public_file


# --- the master's authorised keys ------------------------------------------------------


def enrolled_dir(master_key: Optional[str], authorized_keys: Optional[str]) -> Optional[Path]:
    """Where the enrolled keys are: --authorized-keys, or beside --master-key."""
    if authorized_keys:
        return Path(authorized_keys)
    if master_key:
        return Path(master_key).parent / AUTHORIZED_DIR
    return None



@dataclass(frozen=True)
class EnrolledKey:
    """One public key in the authorised-keys directory."""

    name: str
    public: bytes
    path: Path

    @property
    def key_id(self) -> str:
        return key_id(self.public)


def check_keys_dir(directory: Path, what: str) -> None:
    """Refuse an authorised-keys directory that is missing, or that others may
    write to (anyone who can add a file there could enrol a slave)."""
    if not directory.is_dir():
        raise ConfigError(f"{what} {directory} is not a directory (piw-keys master-init "
                          f"makes it)")
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        raise ConfigError(f"{what} {directory} may be written by others (mode {mode:04o}): "
                          f"anyone could enrol a key; chmod go-w {directory}")


def read_enrolled(directory: Path) -> tuple[dict[bytes, EnrolledKey], list[str]]:
    """The enrolled keys by public key, and a line for each file that is not a key."""
    keys: dict[bytes, EnrolledKey] = {}
    problems: list[str] = []
    try:
        paths = sorted(p for p in directory.iterdir() if p.name.endswith(PUBLIC_SUFFIX))
    except OSError as exc:
        return keys, [f"cannot read {directory}: {exc.strerror or exc}"]
    for path in paths:
        try:
            public, _ = read_key_file(path, "enrolled key")
        except KeyFileError as exc:
            problems.append(str(exc))
            continue
        keys.setdefault(public, EnrolledKey(name=path.name[:-len(PUBLIC_SUFFIX)],
                                            public=public, path=path))
    return keys, problems


class EnrolledKeys:
    """A view of the authorised-keys directory that follows its changes.

    Each thread that checks keys keeps its own view (nothing is shared): a
    look costs one ``stat`` of the directory; the files themselves are
    compared every :data:`FULL_RECHECK_S`.
    """

    def __init__(self, directory: Path | str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self._dir_stamp: Optional[tuple] = None
        self._files_stamp: Optional[tuple] = None
        self._next_full_s = 0.0
        self.keys: dict[bytes, EnrolledKey] = {}
        self.refresh()

    def _stamp_dir(self) -> Optional[tuple]:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _stamp_files(self) -> tuple:
        stamps = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(PUBLIC_SUFFIX):
                        try:
                            st = entry.stat()
                        except OSError:
                            continue
                        stamps.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            return ()
        return tuple(sorted(stamps))

    def refresh(self) -> bool:
        """Re-read the directory if it changed; True if it was re-read."""
        now = self.clock()
        dir_stamp = self._stamp_dir()
        full = now >= self._next_full_s
        if dir_stamp == self._dir_stamp and self._dir_stamp is not None and not full:
            return False
        files_stamp = self._stamp_files()
        self._next_full_s = now + FULL_RECHECK_S
        if dir_stamp == self._dir_stamp and files_stamp == self._files_stamp:
            return False
        self._dir_stamp, self._files_stamp = dir_stamp, files_stamp
        if dir_stamp is None:
            log.warning("the authorised keys directory %s is gone: every slave is refused",
                        self.directory)
            self.keys = {}
            return True
        self.keys, problems = read_enrolled(self.directory)
        for problem in problems:
            log.warning("ignored: %s", problem)
        log.debug("%d enrolled key(s) read from %s", len(self.keys), self.directory)
        return True

    def lookup(self, public: bytes | str) -> Optional[EnrolledKey]:
        """The enrolled key *public* (Z85), as the directory holds it now; None if not."""
        self.refresh()
        if isinstance(public, str):
            public = public.encode("ascii", "replace")
        return self.keys.get(bytes(public))
