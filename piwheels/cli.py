"""What every piwheels command does around its real work: logging and errors.

Library code never configures logging or exits; the entry points do, through
:func:`run`.
"""

from __future__ import annotations

import logging
import sys
from argparse import Namespace
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from .errors import PiwheelsError

if TYPE_CHECKING:
    from .settings import LogSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(args: Union[Namespace, "LogSettings"], *, console: bool = True) -> None:
    """Console logging at the level -v/-q ask for, plus an optional debug log file.

    *args* is a command's :class:`~piwheels.settings.LogSettings`, or (for
    piw-quickstart) its parsed options, which may lack -v/-q.

    A full-screen program (piw-monitor) passes ``console=False``: log lines
    would scribble over its screen, so only the log file gets them.
    """
    verbose = getattr(args, "verbose", 0) or 0
    quiet = getattr(args, "quiet", False)
    if quiet:
        level = logging.WARNING
    elif verbose >= 2:
        level = logging.DEBUG
    else:
        level = logging.INFO
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if console:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else LOG_FORMAT))
        root.addHandler(handler)
    log_file = getattr(args, "log_file", None)
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    if not root.handlers:
        root.addHandler(logging.NullHandler())  # not logging's last resort, stderr


def run(main: Callable[[Optional[Sequence[str]]], int],
        args: Optional[Sequence[str]] = None) -> int:
    """Run a command's *main*, turning deliberate errors into one line and an exit code."""
    try:
        return main(args)
    except PiwheelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
