"""Running piw-quickstart in tests: start it, read its output line by line, Ctrl-C it.

One helper for every quick start test, so each says only what it runs and what
it expects.  :class:`ClosedHome` runs quick start where pyenv's home is closed
(mode 700, as on a fresh system) without touching the host's: in a private
mount namespace a mode-700 directory holding only a bind mount of pyenv's tree
covers that home, so other tests' slaves (the build user, on the host) keep
reaching the interpreters while a quick start test runs beside them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from farm import BUILD_USER, PYENV, build_user

BIN = Path(sys.executable).parent
SERVER = os.environ.get("PIWHEELS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: A server where nothing listens, for runs that must stop before using one.
NO_SERVER = "postgresql://postgres@127.0.0.1:1/postgres"
#: The home directory pyenv's interpreters live under (/root/.pyenv/versions).
PYENV_HOME = PYENV.parent.parent
STOP_TIMEOUT_S = 60
#: What quick start says last when Ctrl-C has stopped everything.
STOPPED = "stopped; the database and all files are gone"


def quickstart_env(**changes: str) -> dict:
    """This environment without any upstream index setting of its own, plus *changes*."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_INDEX_URL", "PIW_PYPI_SIMPLE", "PIP_CONFIG_FILE")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **changes}


def build_user_args() -> list[str]:
    """``--build-user`` for quick start run as root (slaves refuse root), else nothing."""
    return ["--build-user", BUILD_USER] if build_user() is not None else []


class ClosedHome:
    """pyenv's home seen at mode 700 by the commands run through :meth:`command`.

    *backing* (a new mode-700 directory holding a mount point for pyenv's tree)
    is bound over :attr:`path` in a private mount namespace made for each
    command; the host's :attr:`path` is never changed.  Quick start must then
    find its build user locked out of :attr:`path` exactly as on a fresh system.
    """

    def __init__(self, backing: Path, path: Path = PYENV_HOME) -> None:
        self.path = path
        self.backing = backing
        backing.mkdir(mode=0o700)
        backing.chmod(0o700)
        self.tree = PYENV.parent  # /root/.pyenv
        (backing / self.tree.relative_to(path)).mkdir()
        tools = {name: shutil.which(name) for name in ("unshare", "mount", "sh")}
        missing = [name for name, found in tools.items() if found is None]
        if missing:
            raise RuntimeError(f"closing {path} for quick start needs {missing} (util-linux)")
        self._tools = tools

    def mode(self) -> int:
        """The permission bits quick start sees on :attr:`path` (those of *backing*)."""
        return self.backing.stat().st_mode & 0o7777

    def command(self, argv: Sequence[str]) -> list[str]:
        """*argv* run where :attr:`path` is *backing*, with pyenv's tree bound back inside."""
        inner = self.backing / self.tree.relative_to(self.path)
        mount = self._tools["mount"]
        script = (f'{mount} --bind "$1" "$2" && {mount} --rbind "$3" "$4" '
                  '&& shift 4 && exec "$@"')
        return [self._tools["unshare"], "--mount", "--propagation", "private", "--",
                self._tools["sh"], "-c", script, "sh", str(self.tree), str(inner),
                str(self.backing), str(self.path), *argv]


class QuickStart:
    """piw-quickstart running with *args*, its output (stdout and stderr) kept as lines.

    Used as a context manager it is stopped with Ctrl-C (SIGINT) on leaving;
    :attr:`returncode` and :attr:`lines` then tell how it ended.
    """

    def __init__(self, *args: str, env: Optional[dict] = None,
                 closed_home: Optional[ClosedHome] = None) -> None:
        argv = quickstart_command(args, closed_home)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env if env is not None else quickstart_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        """The first line matching *pattern*, waiting up to *timeout_s* for it to be printed."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = re.search(pattern, line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and seen == len(self.lines)):
                    break
                self._changed.wait(left)
        ended = "" if self.proc.poll() is None else f" (it exited with {self.proc.returncode})"
        raise AssertionError(f"no line like {pattern!r} within {timeout_s} s{ended}:\n"
                             + self.output())

    def stop(self) -> int:
        """Ctrl-C, and wait for it to clean up and exit; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"quick start did not stop within {STOP_TIMEOUT_S} s of "
                                 f"Ctrl-C:\n{self.output()}") from None
        finally:
            self._reader.join(5)
        return self.proc.returncode

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def __enter__(self) -> QuickStart:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def assert_stopped_cleanly(self) -> None:
        """It exited 0 after Ctrl-C, having said that everything is gone."""
        assert self.returncode == 0, self.output()
        assert self.lines and self.lines[-1] == STOPPED, self.lines


def quickstart_command(args: Sequence[str], closed_home: Optional[ClosedHome] = None,
                       prefix: Sequence[str] = ()) -> list[str]:
    """The command line that runs piw-quickstart with *args* (after *prefix*, such as
    ``setpriv`` options), behind *closed_home* if given."""
    argv = [*prefix, str(BIN / "piw-quickstart"), *args]
    return closed_home.command(argv) if closed_home is not None else argv


def run_quickstart(*args: str, env: Optional[dict] = None,
                   closed_home: Optional[ClosedHome] = None, prefix: Sequence[str] = (),
                   **run_options) -> subprocess.CompletedProcess:
    """piw-quickstart run to its end (for runs that must stop by themselves)."""
    argv = quickstart_command(args, closed_home, prefix)
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=run_options.pop("timeout", 60),
                          env=env if env is not None else quickstart_env(), **run_options)
