"""How the wheels a contained build made leave its sandbox: through a pipe, not a shared directory.

A sandbox with a writable host directory has no disk quota there (only the
sandbox's own tmpfs is bounded, and a watch that polls the directory's size
loses the race to a fast writer).  So a contained build writes its wheels in
its tmpfs, and this script, run by the build interpreter inside the sandbox
as the wrapper of the build's command, hands them out once the command has
ended: it kills every other process of the sandbox (nothing may change the
directory while it is read), then writes the directory's entries as a tar
stream to an inherited pipe.  The slave reads at most the quota's worth of
that stream (:func:`receive`) and keeps only its regular files with plain
names (:func:`unpack`).

The script half runs under whatever interpreter the build uses, so it needs
nothing but the standard library; the build's command never holds the pipe.
"""

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

#: The size of one read from the pipe, and the tar stream's record size.
BLOCK_BYTES = 64 * 1024
#: Beside the files, a tar stream holds headers and end blocks: this much is allowed for them.
TAR_OVERHEAD_BYTES = 1024 * 1024
#: How long the wrapper keeps killing what is left of the build before it gives up.
END_OTHERS_TIMEOUT_S = 10.0
#: The first line of the wrapper's usage (for a mistaken command line).
USAGE = "usage: hand_out.py FD DIRECTORY -- COMMAND..."


# --- inside the sandbox ----------------------------------------------------------------


def _others_alive() -> bool:
    """Whether a process other than this one and the sandbox's init still runs."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone while looked at
        if state not in (b"Z", b"X"):
            return True
    return False


def end_the_others() -> bool:
    """Kill every other process in this PID namespace (kill(-1) spares only the caller
    and init); again until none is left, as a forking one may outrun one round."""
    deadline = time.monotonic() + END_OTHERS_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return True  # nobody else
        if not _others_alive():
            return True
        time.sleep(0.01)
    return not _others_alive()


def write_stream(directory: str, out_fd: int) -> None:
    """The entries of *directory* as a tar stream on *out_fd*, each as what it is
    (a link as a link, a FIFO as a FIFO: only regular files carry content)."""
    with os.fdopen(out_fd, "wb") as out:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, name), arcname=name, recursive=False)


def main(argv: List[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    out_fd, directory, command = int(argv[1]), argv[2], argv[4:]
    os.makedirs(directory, exist_ok=True)
    try:
        child = subprocess.Popen(command)  # close_fds: the build never holds the pipe
    except OSError as exc:
        print(f"hand_out.py: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    status = child.wait()
    if not end_the_others():
        print("hand_out.py: processes of the build would not die; nothing handed out",
              file=sys.stderr)
        return status if status >= 0 else 128 - status
    try:
        write_stream(directory, out_fd)
    except OSError as exc:  # the slave stopped reading: it says why
        print(f"hand_out.py: handing out stopped: {exc}", file=sys.stderr)
    if status < 0:  # end as the command ended, so the slave sees its signal
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


# --- on the slave ----------------------------------------------------------------------


def receive(in_fd: int, dest: Path, limit_bytes: int) -> bool:
    """Copy the stream on *in_fd* to the file *dest*, at most *limit_bytes* of it plus
    the tar overhead; False when there was more (the rest is not read)."""
    left = limit_bytes + TAR_OVERHEAD_BYTES
    with os.fdopen(in_fd, "rb", buffering=0) as stream, open(dest, "wb") as out:
        while True:
            block = stream.read(min(BLOCK_BYTES, left + 1))
            if not block:
                return True
            if len(block) > left:
                return False
            out.write(block)
            left -= len(block)


def unpack(stream_path: Path, dest: Path) -> Tuple[List[str], Optional[str]]:
    """The regular files of the tar stream at *stream_path*, written into *dest*:
    (their names, None), or ([], why the stream is refused)."""
    names: List[str] = []
    try:
        with tarfile.open(stream_path, mode="r|") as tar:
            for member in tar:
                name = member.name
                if "/" in name or name in ("", ".", ".."):
                    return [], f"the wheel directory's stream names {name!r}, not a plain file"
                if not member.isreg():
                    return [], (f"the build left {name} in its wheel directory, "
                                "which is not a regular file")
                source = tar.extractfile(member)
                assert source is not None  # a regular member has content
                with open(dest / name, "xb") as out:
                    while True:
                        block = source.read(BLOCK_BYTES)
                        if not block:
                            break
                        out.write(block)
                names.append(name)
    except (tarfile.TarError, OSError) as exc:
        return [], f"the wheels could not be handed out of the sandbox: {exc}"
    return names, None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
