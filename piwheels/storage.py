"""Every write into the output tree goes through here: temp file, then rename.

A reader (the web server, pip) sees either the old file or the new one, never
half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write *data* to *path* through a temp file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def atomic_move(source: Path, dest: Path, *, mode: int = 0o644) -> None:
    """Move *source* into place as *dest* (same file system: one rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(source, mode)
    os.replace(source, dest)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
