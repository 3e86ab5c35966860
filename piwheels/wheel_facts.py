"""What a wheel file says about itself, and whether the master may accept it.

The slave reads each wheel it built with :func:`inspect_wheel` and claims the
facts in BUILT; the master checks the file it received with
:func:`check_wheel`, which computes the facts again from the file and holds
the claim against them (:func:`check_claims`): what the master records and
publishes is what it computed, never what a builder said.  All are pure
helpers: files in, facts or a :class:`~piwheels.errors.WheelError` out, no
sockets.
"""

from __future__ import annotations

import base64
import csv
import email.parser
import hashlib
import io
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, fields, replace
from email.message import Message
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import apt_packages
from .errors import HashMismatch, WheelError
from .protocols import (
    MAX_APT_NAME_CHARS, MAX_FACT_ITEMS, MAX_METADATA_BYTES, MAX_REQUIREMENT_CHARS, WheelFacts,
)

#: Bytes read at a time when hashing or copying (wheels can be large).
CHUNK_BYTES = 1024 * 1024
#: RECORD hash algorithms the wheel specification accepts ("sha256 or better").
RECORD_HASHES = ("sha256", "sha384", "sha512")
#: The longest file name the master stores (and the protocol carries).
MAX_FILENAME_LENGTH = 255
#: Members smaller than this are not held to the compression ratio: small
#: files of repeated text compress far, and cost nothing to unpack.
RATIO_FLOOR_BYTES = 1024 * 1024
#: The largest RECORD the master reads into memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class UnpackLimits:
    """How far a wheel may unpack: a zip bomb is refused by its zip directory's
    declared sizes, and unpacking stops at these limits whatever those say."""

    #: bytes all members together may unpack to
    max_unpacked: int
    #: how many times its compressed size a member (past RATIO_FLOOR_BYTES), or
    #: the whole wheel, may unpack to
    max_ratio: float

_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class _WheelName:
    """A wheel file name taken apart; the tag fields keep compressed sets (``py2.py3``)."""

    filename: str
    name: str
    version: Version
    package_tag: str
    version_tag: str
    py_tag: str
    abi_tag: str
    platform_tag: str
    tags: frozenset[Tag]


@dataclass(frozen=True)
class _Metadata:
    raw: bytes
    name: str
    version: str
    requires_python: Optional[str]
    requires_dist: tuple[str, ...]


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at *path*, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_wheel(path: Path, *, find_apt_deps: bool = True) -> WheelFacts:
    """The facts of the wheel at *path*; raises :class:`WheelError` if it cannot be read.

    With *find_apt_deps*, the Debian packages its shared libraries need directly
    are looked up (see :mod:`piwheels.apt_packages`; none where the tools are missing).
    """
    path = Path(path)
    name = _parse_filename(path.name)
    return _facts(path, name, path.stat().st_size, sha256_file(path), find_apt_deps)


def check_wheel(
    path: Path,
    *,
    package: str,
    version: str,
    claimed: Optional[WheelFacts],
    builder_abi: Optional[str],
    builder_platform: Optional[str],
    max_size: int,
    builder_platforms: tuple[str, ...] = (),
    unpack: UnpackLimits,
    filename: Optional[str] = None,
    sha256: Optional[str] = None,
    source: Optional[BinaryIO] = None,
) -> WheelFacts:
    """The facts of a wheel the master received, computed from the file after
    every acceptance check.

    *claimed*: what the builder said of it (None for an operator's import);
    every fact the master can compute must agree with it (the apt
    dependencies, which only the builder can see, are taken from it).
    *builder_platforms*: the other platforms the builder's interpreter
    accepts, which its wheels may carry besides *builder_platform*.
    *filename* is the name the slave gave the file (default: the name of
    *path*).  Raises :class:`WheelError` with a one-line reason for the first
    check that fails.  *sha256* is the file's hash when the caller computed it
    while writing it.  *source*, an open file of the wheel, is read instead of
    *path* (the file receiver's view of a file still arriving, whose reads
    wait for the bytes they ask for).
    """
    path = Path(path)
    filename = path.name if filename is None else filename
    name = _parse_filename(filename)
    size = path.stat().st_size if source is None else source.seek(0, io.SEEK_END)
    if size > max_size:
        raise WheelError(f"{filename} is {size} bytes, over the limit of {max_size} bytes")
    # the cheap facts first: a file that is not what was sent is not unpacked
    if claimed is not None and size != claimed.size:
        raise WheelError(_disagrees("size", claimed.size, size))
    sha256 = sha256 or sha256_file(path)
    if claimed is not None:
        check_sha256(claimed, sha256)
    wheel = path if source is None else source
    _check_contents(wheel, name, unpack)
    facts = _facts(wheel, name, size, sha256, find_apt_deps=False)
    check_identity(facts, package=package, version=version)
    _check_tags(name, builder_abi, builder_platform, builder_platforms)
    if claimed is None:
        return facts
    facts = replace(facts, **{f.name: getattr(claimed, f.name) for f in _CLAIMS_ONLY})
    check_claims(claimed, facts)
    return facts


def check_sha256(claimed: WheelFacts, sha256: str) -> None:
    """Raises :class:`HashMismatch` unless the file's hex SHA-256 is the claimed one."""
    if sha256 != claimed.sha256:
        raise HashMismatch(_disagrees("sha256", claimed.sha256, sha256))


#: the facts only the builder can know: the master keeps its word for them
_CLAIMS_ONLY = tuple(f for f in fields(WheelFacts) if not f.metadata["checked"])


def check_claims(claimed: WheelFacts, computed: WheelFacts) -> None:
    """Raises :class:`WheelError` naming the first fact a builder claimed that
    the file does not have (METADATA: the first header that differs)."""
    for f in fields(WheelFacts):
        said, found = getattr(claimed, f.name), getattr(computed, f.name)
        if said == found:
            continue
        if f.name == "metadata":
            raise WheelError(_metadata_disagrees(said, found, computed.filename))
        raise WheelError(_disagrees(f.name, said, found))


def _label(fact_name: str) -> str:
    return WheelFacts.__dataclass_fields__[fact_name].metadata["label"]


def _disagrees(fact_name: str, said: object, found: object) -> str:
    return (f"the builder reported {_label(fact_name)} {_shown(said)}, but the file has "
            f"{_shown(found)}")


def offer_disagrees(fact_name: str, offered: object, claimed: object) -> str:
    """Why a file offered with another size or hash than BUILT claimed is refused."""
    return (f"the builder reported {_label(fact_name)} {_shown(claimed)}, but offered "
            f"the file with {_shown(offered)}")


def _metadata_disagrees(said: bytes, found: bytes, filename: str) -> str:
    """Which of METADATA's headers a claim has wrong (or that its bytes differ)."""
    actual = _parse_metadata(found, filename)
    try:
        claimed: Optional[_Metadata] = _parse_metadata(said, filename)
    except WheelError:
        claimed = None
    for header, attr in (("Name", "name"), ("Version", "version"),
                         ("Requires-Python", "requires_python"),
                         ("Requires-Dist", "requires_dist")):
        if claimed is not None and getattr(claimed, attr) != getattr(actual, attr):
            return (f"the builder reported METADATA with {header} "
                    f"{_shown(getattr(claimed, attr))}, but the file's has "
                    f"{_shown(getattr(actual, attr))}")
    return (f"the builder reported METADATA of {len(said)} bytes that are not the file's "
            f"({len(found)} bytes)")


def _shown(value: object) -> str:
    """A fact short enough for a one-line reason."""
    if isinstance(value, tuple):
        text = ", ".join(value) if value else "none"
    elif isinstance(value, bytes):
        text = f"{len(value)} bytes"
    elif value is None:
        text = "none"
    else:
        text = str(value)
    text = " ".join(text.split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


# --- file name ----------------------------------------------------------------------


def _parse_filename(filename: str) -> _WheelName:
    if (
        not filename
        or len(filename) > MAX_FILENAME_LENGTH
        or "/" in filename
        or "\\" in filename
        or "\0" in filename
        or filename.startswith(".")
        or filename != filename.strip()
    ):
        raise WheelError(f"{filename!r} is not a plain file name")
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise WheelError(f"{filename!r} is not a wheel file name: {exc}") from None
    parts = filename[: -len(".whl")].split("-")
    return _WheelName(
        filename=filename,
        name=name,
        version=version,
        package_tag=parts[0],
        version_tag=parts[1],
        py_tag=parts[-3],
        abi_tag=parts[-2],
        platform_tag=parts[-1],
        tags=tags,
    )


# --- reading the archive -------------------------------------------------------------


class _Archive:
    """A wheel opened as a zip, with every zip failure turned into a WheelError."""

    def __init__(self, path: Union[Path, BinaryIO], filename: str) -> None:
        self.filename = filename
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise WheelError(f"{filename} is not a valid zip file: {exc}") from None

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    def files(self) -> list[zipfile.ZipInfo]:
        return [info for info in self.zip.infolist() if not info.is_dir()]

    def read(self, member: str, limit: int) -> bytes:
        """The whole of a member that may hold at most *limit* bytes."""
        try:
            declared = self.zip.getinfo(member).file_size
        except KeyError:
            raise WheelError(f"{self.filename} holds no {member}") from None
        if declared > limit:
            raise WheelError(f"{member} in {self.filename} is {declared} bytes, over the "
                             f"limit of {limit} bytes")
        return b"".join(self.chunks(member))

    def chunks(self, member: str) -> Iterator[bytes]:
        """The member's bytes in pieces; reading to the end also checks its CRC."""
        try:
            with self.zip.open(member) as f:
                yield from iter(lambda: f.read(CHUNK_BYTES), b"")
        except KeyError:
            raise WheelError(f"{self.filename} holds no {member}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError) as exc:
            raise WheelError(f"{self.filename} is corrupt at {member}: {exc}") from None

    def dist_info(self, name: _WheelName) -> str:
        """The one top-level ``.dist-info`` directory (the one named for the project if several)."""
        tops = sorted({
            info.filename.split("/", 1)[0] for info in self.zip.infolist()
            if "/" in info.filename and info.filename.split("/", 1)[0].endswith(".dist-info")
        })
        if len(tops) > 1:
            tops = [
                top for top in tops
                if canonicalize_name(top[: -len(".dist-info")].rsplit("-", 1)[0]) == name.name
            ]
        if len(tops) != 1:
            raise WheelError(
                f"{self.filename} has {len(tops) or 'no'} .dist-info directories for "
                f"{name.name}; a wheel has exactly one")
        return tops[0]


def _facts(path: Union[Path, BinaryIO], name: _WheelName, size: int, sha256: str, find_apt_deps: bool) -> WheelFacts:
    with _Archive(path, name.filename) as archive:
        metadata = _parse_metadata(
            archive.read(f"{archive.dist_info(name)}/METADATA", MAX_METADATA_BYTES),
            name.filename)
    apt = find_apt_dependencies(path) if find_apt_deps else ()
    for what, items, longest in (("Requires-Dist lines", metadata.requires_dist,
                                  MAX_REQUIREMENT_CHARS),
                                 ("apt dependencies", apt, MAX_APT_NAME_CHARS)):
        if len(items) > MAX_FACT_ITEMS:
            raise WheelError(f"{name.filename} has {len(items)} {what}, over the limit "
                             f"of {MAX_FACT_ITEMS}")
        if any(len(item) > longest for item in items):
            raise WheelError(f"{name.filename} has one of its {what} over {longest} characters")
    return WheelFacts(
        filename=name.filename,
        size=size,
        sha256=sha256,
        package_tag=name.package_tag,
        version_tag=name.version_tag,
        py_tag=name.py_tag,
        abi_tag=name.abi_tag,
        platform_tag=name.platform_tag,
        requires_python=metadata.requires_python,
        requires_dist=metadata.requires_dist,
        metadata=metadata.raw,
        metadata_sha256=hashlib.sha256(metadata.raw).hexdigest(),
        apt_dependencies=apt,
    )


def _parse_metadata(raw: bytes, filename: str) -> _Metadata:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WheelError(f"the METADATA of {filename} is not UTF-8") from None
    message: Message = email.parser.Parser().parsestr(text, headersonly=True)
    name = _one_line(message.get("Name"))
    version = _one_line(message.get("Version"))
    if not name or not version:
        raise WheelError(f"the METADATA of {filename} has no Name or no Version")
    requires_python = _one_line(message.get("Requires-Python")) or None
    requires_dist = tuple(
        line for line in map(_one_line, message.get_all("Requires-Dist") or ()) if line
    )
    return _Metadata(raw, name, version, requires_python, requires_dist)


def _one_line(value: object) -> str:
    """A header value with folded lines joined (a reason must stay on one line)."""
    return " ".join(str(value).split()) if value is not None else ""


# --- acceptance checks ----------------------------------------------------------------


def _check_unpacked_size(archive: _Archive, limits: UnpackLimits) -> None:
    """Refuse a zip bomb by what its directory declares, before unpacking anything."""
    filename = archive.filename
    infos = archive.zip.infolist()
    unpacked = sum(info.file_size for info in infos)
    if unpacked > limits.max_unpacked:
        raise WheelError(f"{filename} unpacks to {unpacked} bytes, over the limit of "
                         f"{limits.max_unpacked} bytes")
    packed = sum(info.compress_size for info in infos)
    if unpacked > RATIO_FLOOR_BYTES and unpacked > limits.max_ratio * max(1, packed):
        raise WheelError(f"{filename} unpacks to {unpacked / max(1, packed):.0f} times its "
                         f"compressed size, over the limit of {limits.max_ratio:g}")
    for info in infos:
        if info.file_size > RATIO_FLOOR_BYTES and \
                info.file_size > limits.max_ratio * max(1, info.compress_size):
            raise WheelError(
                f"{info.filename} in {filename} unpacks to "
                f"{info.file_size / max(1, info.compress_size):.0f} times its compressed "
                f"size, over the limit of {limits.max_ratio:g}")


def _check_contents(path: Union[Path, BinaryIO], name: _WheelName, limits: UnpackLimits) -> None:
    """Safe member names, a RECORD that matches every member, no corrupt data."""
    filename = name.filename
    with _Archive(path, filename) as archive:
        _check_unpacked_size(archive, limits)
        #: bytes actually unpacked so far: the guard whatever the directory says
        unpacked = 0
        names = [info.filename for info in archive.zip.infolist()]
        seen: set[str] = set()
        for member in names:
            _check_member_name(member, filename)
            if member in seen:
                raise WheelError(f"{filename} holds {member} twice")
            seen.add(member)
        record_path = f"{archive.dist_info(name)}/RECORD"
        if record_path not in seen:
            raise WheelError(f"{filename} has no {record_path}")
        record = _parse_record(archive.read(record_path, MAX_RECORD_BYTES), filename)
        for info in archive.files():
            member = info.filename
            entry = record.pop(member, None)
            if entry is None:
                raise WheelError(f"{filename} holds {member}, which its RECORD does not list")
            algorithm, expected, size_text = entry
            unsigned = member == record_path or (
                member.startswith(record_path) and member.endswith((".jws", ".p7s"))
            )
            if unsigned:
                for chunk in archive.chunks(member):
                    # nothing to compare, but the zip's CRC is still checked
                    unpacked += len(chunk)
                if unpacked > limits.max_unpacked:
                    raise WheelError(f"{filename} unpacks past the limit of "
                                     f"{limits.max_unpacked} bytes")
                continue
            if algorithm is None:
                raise WheelError(f"the RECORD of {filename} has no hash for {member}")
            digest = hashlib.new(algorithm)
            length = 0
            for chunk in archive.chunks(member):
                length += len(chunk)
                unpacked += len(chunk)
                if length > info.file_size or unpacked > limits.max_unpacked:
                    raise WheelError(f"{member} in {filename} unpacks past its declared "
                                     f"size or the limit of {limits.max_unpacked} bytes")
                digest.update(chunk)
            actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
            if actual != expected:
                raise WheelError(f"{member} in {filename} does not match its RECORD hash")
            if size_text and size_text != str(length):
                raise WheelError(
                    f"{member} in {filename} is {length} bytes, but its RECORD says {size_text}")
        if record:
            missing = sorted(record)[0]
            raise WheelError(f"the RECORD of {filename} lists {missing}, which the wheel lacks")


def _check_member_name(member: str, filename: str) -> None:
    parts = re.split(r"[/\\]", member)
    if member.startswith(("/", "\\")) or _DRIVE.match(member):
        raise WheelError(f"{filename} holds a member with an absolute path: {member!r}")
    if ".." in parts:
        raise WheelError(f"{filename} holds a member that climbs out with '..': {member!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in member):
        raise WheelError(f"{filename} holds a member with a control character in its name: {member!r}")


def _parse_record(raw: bytes, filename: str) -> dict[str, tuple[Optional[str], str, str]]:
    """RECORD as {path: (algorithm or None, urlsafe-b64 digest, size text)}."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WheelError(f"the RECORD of {filename} is not UTF-8") from None
    entries: dict[str, tuple[Optional[str], str, str]] = {}
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise WheelError(f"the RECORD of {filename} is not valid CSV: {exc}") from None
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            raise WheelError(f"the RECORD of {filename} has a line of {len(row)} fields, not 3")
        member, hash_text, size_text = row
        if member in entries:
            raise WheelError(f"the RECORD of {filename} lists {member} twice")
        algorithm: Optional[str] = None
        digest = ""
        if hash_text:
            algorithm, sep, digest = hash_text.partition("=")
            if not sep or algorithm not in RECORD_HASHES:
                raise WheelError(
                    f"the RECORD of {filename} hashes {member} with {algorithm!r}; "
                    f"a wheel must use one of {', '.join(RECORD_HASHES)}")
        entries[member] = (algorithm, digest, size_text.strip())
    return entries


def check_identity(facts: WheelFacts, *, package: str, version: str) -> None:
    """Raises :class:`WheelError` unless METADATA and file name both name the job's release."""
    name = _parse_filename(facts.filename)
    metadata = _parse_metadata(facts.metadata, name.filename)
    job_name = canonicalize_name(package)
    if canonicalize_name(metadata.name) != job_name or name.name != job_name:
        raise WheelError(
            f"{name.filename} is for project {metadata.name!r} (file name: "
            f"{name.package_tag!r}), but the build was of {package!r}")
    try:
        metadata_version = Version(metadata.version)
    except InvalidVersion:
        raise WheelError(
            f"the METADATA of {name.filename} has an invalid Version {metadata.version!r}"
        ) from None
    try:
        job_version = Version(version)
    except InvalidVersion:
        raise WheelError(f"the build's version {version!r} is not a valid version") from None
    if metadata_version != job_version or name.version != job_version:
        raise WheelError(
            f"{name.filename} is version {metadata.version} (file name: {name.version_tag}), "
            f"but the build was of version {version}")


def _check_tags(name: _WheelName, builder_abi: Optional[str], builder_platform: Optional[str],
                builder_platforms: tuple[str, ...] = ()) -> None:
    """Each tag is pure, or for the ABI of the slave that built it and a platform
    its interpreter accepts (its own, or one of *builder_platforms*)."""
    platforms = {p.lower() for p in (builder_platform or "", *builder_platforms)}
    for tag in sorted(name.tags, key=str):
        if tag.abi == "none" and tag.platform == "any":
            continue
        abi_ok = builder_abi is None or tag.abi in (builder_abi.lower(), "abi3", "none")
        platform_ok = builder_platform is None or tag.platform in platforms
        if not (abi_ok and platform_ok):
            raise WheelError(
                f"{name.filename} has tag {tag}, which a builder for ABI {builder_abi} "
                f"on {builder_platform} cannot have made")


# --- apt dependencies -------------------------------------------------------------------


def find_apt_dependencies(path: Path) -> tuple[str, ...]:
    """The Debian packages providing the wheel's shared libraries' direct
    ``DT_NEEDED`` libraries, sorted, less those every system has.

    Empty where ``readelf``, ``ldd`` or ``dpkg`` is missing, or nothing is needed from outside the wheel.
    """
    if apt_packages.tools() is None:
        return ()
    with tempfile.TemporaryDirectory(prefix="piw-apt-") as tmp:
        return apt_packages.linked_packages(_extract_libraries(path, Path(tmp)), inside=Path(tmp))


def _extract_libraries(path: Path, root: Path) -> list[Path]:
    """Copy the wheel's shared libraries under *root*, keeping their relative paths."""
    extracted = []
    with _Archive(path, path.name) as archive:
        for info in archive.files():
            member = info.filename
            if not _SHARED_LIBRARY.search(member.rsplit("/", 1)[-1]):
                continue
            parts = member.split("/")
            if member.startswith("/") or ".." in parts or "\\" in member or "\0" in member:
                continue
            target = root.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as dst:
                for chunk in archive.chunks(member):
                    dst.write(chunk)
            extracted.append(target)
    return extracted
