"""A real terminal for tests: one tmux pane on a tmux server of the test's own."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

from farm import wait_for

WIDTH, HEIGHT = 160, 40


class Terminal:
    """Runs *command* in a WIDTH x HEIGHT tmux pane; read the screen, press keys."""

    def __init__(self, tmp_path: Path, command: Sequence[str], *,
                 env: Optional[dict[str, str]] = None) -> None:
        self.socket_name = f"piw-test-{uuid.uuid4().hex[:12]}"
        self.config = tmp_path / "tmux.conf"
        # keep the pane (and its last screen) when the program exits
        self.config.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.status_file = tmp_path / f"{self.socket_name}.status"
        environment = " ".join(f"{key}={shlex.quote(value)}"
                               for key, value in (env or {}).items())
        # tmux's own #{pane_dead_status} is not reliable everywhere: keep it in a file
        shell = (f"env {environment} {shlex.join(command)}; "
                 f"echo $? > {shlex.quote(str(self.status_file))}")
        self.tmux("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "-s", "test",
                  f"sh -c {shlex.quote(shell)}")
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket_name, "-f", str(self.config), *args],
                                capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "test")

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "test", *keys)

    def exit_status(self) -> Optional[int]:
        """The program's exit status once it has exited, else None."""
        try:
            return int(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait(self, condition: Callable[[str], object], timeout_s: float, what: str) -> str:
        """Wait until *condition* holds for the screen; say what was on it if it never does."""
        screens = [""]

        def check():
            screens[0] = self.screen()
            return condition(screens[0])

        try:
            wait_for(check, timeout_s, what, interval_s=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen shows:\n{screens[0]}") from None
        return screens[0]

    def wait_text(self, text: str, timeout_s: float = 10) -> str:
        """Wait for *text* on the screen (also where the program wrapped it onto lines)."""
        return self.wait(lambda screen: text in screen or text in flat(screen), timeout_s,
                         repr(text))

    def wait_gone(self, text: str, timeout_s: float = 10) -> str:
        return self.wait(lambda screen: text not in screen, timeout_s, f"{text!r} to go")

    def wait_match(self, pattern: str, timeout_s: float = 10) -> re.Match:
        screen = self.wait(lambda screen: re.search(pattern, screen, re.M), timeout_s,
                           f"/{pattern}/")
        return re.search(pattern, screen, re.M)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket_name, "kill-server"],
                       capture_output=True, timeout=10)
        self.socket_path.unlink(missing_ok=True)


def flat(screen: str) -> str:
    """The screen as one line, as if nothing were wrapped."""
    return " ".join(line.strip() for line in screen.splitlines() if line.strip())
