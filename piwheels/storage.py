"""Every write into the output tree goes through here: temp file, then rename.

A reader (the web server, pip) sees either the old file or the new one, never
half of one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


#: Where a quarantined project's wheels wait, under the output path (PEP 792):
#: a dot-directory, which the documented web-server configurations never serve.
WITHHELD_DIR = ".withheld"

def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write *data* to *path* through a temp file in the same directory.

    The temp file is a dot-file named for this process and thread, so writers
    never share one, and it costs no more system calls than the write itself
    (the index writer makes hundreds of thousands of these in a full rewrite).
    """
    directory, name = os.path.split(os.fspath(path))
    # (cut long names short: the temp name must fit the file system's limit too)
    temp = os.path.join(directory, f".{name[:180]}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, mode)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(temp, flags, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # whatever the umask
        finally:
            os.close(fd)
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
