"""piw-master: follow the upstream index, hand builds to slaves, publish their wheels.

See :mod:`piwheels.master.supervisor` for how the tasks are run.
"""

from __future__ import annotations

import logging
import signal
from typing import Optional, Sequence

from .. import cli, settings

log = logging.getLogger("piwheels.master")


def _main(argv: Optional[Sequence[str]]) -> int:
    from .supervisor import Master

    master = Master(settings.load(settings.MasterConfig, "piw-master",
                                  __doc__.splitlines()[0], settings.MASTER_OPTIONS, argv))

    def on_signal(signum, frame):
        log.info("received %s; stopping", signal.Signals(signum).name)
        master.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return master.run()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
