"""Hand-made wheels, correct unless a test asks for a flaw."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Optional


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def craft_wheel(
    directory: Path,
    filename: str = "piw_craft-1.0-py3-none-any.whl",
    *,
    name: str = "piw-craft",
    version: str = "1.0",
    files: Optional[dict[str, bytes]] = None,
    record: Optional[str] = None,
    record_extra: str = "",
    dist_info: Optional[str] = None,
    metadata: Optional[bytes] = None,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """A wheel with a correct RECORD unless *record* replaces it (``"omit"``: none)."""
    dist_info = dist_info or f"{name.replace('-', '_')}-{version}.dist-info"
    members = dict(files if files is not None else {"piw_craft.py": b"ANSWER = 42\n"})
    members.setdefault(
        f"{dist_info}/METADATA",
        metadata if metadata is not None else
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode())
    members.setdefault(
        f"{dist_info}/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: piwheels-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    record_path = f"{dist_info}/RECORD"
    if record is None:
        record = "".join(
            f"{member},{record_hash(data)},{len(data)}\n" for member, data in members.items()
        ) + f"{record_path},,\n" + record_extra
    path = directory / filename
    with zipfile.ZipFile(path, "w", compression) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        if record != "omit":
            wheel.writestr(record_path, record)
    return path


def with_header(metadata: bytes, header: str, value: str) -> bytes:
    """*metadata* with *header* set to *value* (added where it is missing)."""
    lines = [line for line in metadata.split(b"\n") if not line.startswith(header.encode() + b":")]
    return b"\n".join([lines[0], f"{header}: {value}".encode(), *lines[1:]])


#: A builder's false claim in BUILT about a crafted wheel it then sends truthfully
#: (its true size and hash): fact -> (the claims changed from the wheel's true
#: facts, as a message dict; words the master's reason must hold).
FALSE_CLAIMS = {
    "name": (lambda f: {"metadata": with_header(f["metadata"], "Name", "evil")},
             "the builder reported METADATA with Name 'evil'"),
    "version": (lambda f: {"metadata": with_header(f["metadata"], "Version", "6.6")},
                "the builder reported METADATA with Version '6.6'"),
    "requires_dist": (lambda f: {"requires_dist": ["evil>=1"]},
                      "the builder reported Requires-Dist 'evil>=1', but the file has 'none'"),
    "requires_python": (lambda f: {"requires_python": ">=3.99"},
                        "the builder reported Requires-Python '>=3.99', but the file has 'none'"),
    "tags": (lambda f: {"py_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_x86_64"},
             "the builder reported Python tag 'cp311', but the file has 'py3'"),
    "size": (lambda f: {"size": f["size"] + 1}, "the builder reported size '"),
    "sha256": (lambda f: {"sha256": "0" * 64},
               "the builder reported SHA-256 '" + "0" * 64 + "', but offered the file with"),
}
