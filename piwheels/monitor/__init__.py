"""piw-monitor: watch the master and every slave live, and steer them.

It asks the master's control socket for a SNAPSHOT, then follows the status
feed.  While the master is not running or cannot be reached it says so and
keeps trying.  Keys pause and resume the master or slaves, skip a slave's
build, stop a slave, or stop the master (after asking).  See docs/monitor.rst.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from .. import cli, settings
from ..errors import PiwheelsError

log = logging.getLogger("piwheels.monitor")


def _main(argv: Optional[Sequence[str]]) -> int:
    from .app import Monitor
    from .link import MasterLink
    from .model import FarmModel
    from .view import MonitorView

    options = settings.load(settings.MonitorConfig, "piw-monitor", __doc__.splitlines()[0],
                            settings.MONITOR_OPTIONS, argv, console=False)
    logging.getLogger("urwid").setLevel(logging.WARNING)  # it logs every redraw
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise PiwheelsError("piw-monitor draws on a terminal; run it in one")
    model = FarmModel()
    link = MasterLink(model, options.control_address, options.status_address,
                      timeout_s=options.request_timeout_s)
    log.info("watching the master at %s and %s", options.control_address,
             options.status_address)
    try:
        Monitor(link, model, MonitorView(options.control_address)).run()
    finally:
        link.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
