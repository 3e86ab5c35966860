"""The builder's image: one digest of everything that decides how a build turns out here.

A build that failed for a deterministic cause (a missing header, a broken
sdist) fails the same way again on the same image, so the master does not
offer it to that image again; a new image (a package installed, an upgrade)
may succeed, so it re-opens what such a change can fix.  The digest covers the
operating system release (os-release whole), the build interpreter (its
Python version, tags, pip and setuptools versions), how builds are contained,
and every installed Debian package with its version (``dpkg-query -W``): the
things a build can see and use.  It leaves out what does not change an outcome
here or is an operator's limit rather than the environment (the label, the
time and memory limits, the work dir, the kernel's uptime).

``--image-salt`` adds a text of the operator's choosing: for a change the
digest cannot see (a library built into /usr/local), and for tests, which
present two images from one machine.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from typing import Mapping, Optional

log = logging.getLogger("piwheels.slave.image")

#: Where the operating system describes its release, first found wins.
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
#: The build interpreter's facts (from the builder's probe) that belong to the image.
INTERPRETER_FACTS = ("python_tag", "abi_tag", "platform_tag", "python_version",
                     "pip_version", "setuptools_version", "containment")
#: One line per installed package: name, architecture and version.
DPKG_QUERY = ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Package}:${Architecture}=${Version}\n"]
#: How long listing the installed packages may take.
DPKG_TIMEOUT_S = 60.0


def os_release() -> str:
    """The whole os-release text ('' where there is none)."""
    for candidate in OS_RELEASE_FILES:
        try:
            with open(candidate, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            continue
    return ""


def installed_packages() -> Optional[list[str]]:
    """Every installed Debian package as ``name:arch=version``, sorted (None: no
    dpkg here, or it failed: the image is then told apart by the rest)."""
    try:
        listing = subprocess.run(DPKG_QUERY, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, errors="replace", timeout=DPKG_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("no Debian package list for the image digest: %s", exc)
        return None
    if listing.returncode != 0:
        log.info("no Debian package list for the image digest: dpkg-query exited %d",
                 listing.returncode)
        return None
    # "ii " (installed): removed packages whose configuration stays do not count
    return sorted(line[3:] for line in listing.stdout.splitlines() if line.startswith("ii"))


def image_digest(interpreter: Mapping[str, str], os_text: str,
                 packages: Optional[list[str]], salt: str = "") -> str:
    """The sha256 (hex) of the image's parts, each named, in a fixed order."""
    digest = hashlib.sha256()

    def part(name: str, value: str) -> None:
        data = value.encode("utf-8", "replace")
        digest.update(f"{name} {len(data)}\n".encode())
        digest.update(data)

    part("os-release", os_text)
    for name in INTERPRETER_FACTS:
        part(name, str(interpreter.get(name, "")))
    part("dpkg", "\n".join(packages) if packages is not None else "unavailable")
    part("salt", salt)
    return digest.hexdigest()


def builder_image(interpreter: Mapping[str, str], salt: str = "") -> str:
    """This host's image digest for the build interpreter described by *interpreter*."""
    return image_digest(interpreter, os_release(), installed_packages(), salt)
