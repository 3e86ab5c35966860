"""Why a build failed, as the builder tells the master: the cause and the package to install.

The slave runs :func:`~piwheels.diagnosis.diagnose` on the failed build's log
and its one-line reason and, when the diagnosis names something missing, asks
:class:`~piwheels.debian_lookup.DebianLookup` on this host (outside the build
sandbox, with its cache in the slave's cache directory) which Debian package
provides it.  The lookup may take seconds (``apt-file``), so this runs in the
build thread, before BUILT, while the slave's loop keeps heartbeating.  What
BUILT carries is the builder's claim: the master diagnoses the log again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from ..debian_lookup import DebianLookup
from ..diagnosis import diagnose

log = logging.getLogger("piwheels.slave.explain")

#: The lookup's cache, in the slave's cache directory.
LOOKUP_CACHE_NAME = "debian-packages.json"


class Explainer:
    """Diagnoses failed builds; with *lookup_timeout_s* > 0 also names the Debian package."""

    def __init__(self, cache_dir: Optional[Path], lookup_timeout_s: float) -> None:
        self.lookup = (DebianLookup(Path(cache_dir) / LOOKUP_CACHE_NAME, timeout_s=lookup_timeout_s)
                       if lookup_timeout_s > 0 and cache_dir is not None else None)

    def explain(self, log_text: str, reason: Optional[str]) -> dict:
        """BUILT's ``diagnosis`` of a failed build: {cause, detail, package}."""
        found = diagnose(log_text, reason or "")
        package = None
        if found.wanted is not None and self.lookup is not None:
            started = time.monotonic()
            provider = self.lookup.package_for(found.wanted)
            package = provider.package if provider is not None else None
            log.info("%s: %s is %s (looked up in %.1f s)", found.label, found.wanted,
                     f"in {package}" if package else "in no package known here",
                     time.monotonic() - started)
        return {"cause": found.cause, "detail": found.detail, "package": package}
