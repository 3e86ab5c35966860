"""The Debian package that provides what a failed build wanted, found the way Debian users do.

``dpkg -S`` first (the file is installed, so a build failed for another
reason, or it is there under another name), then ``apt-file search`` over the
Contents of the builder's own apt sources: no hand-kept table.  ``apt-file`` is
slow (seconds a search), so the patterns of several wants go in one run and
every answer, a negative one too, is cached in a JSON file keyed by the apt
lists it was read from: an ``apt-file update`` or a changed source list starts
the cache afresh.  This runs on the builder (slave) host, outside the build
sandbox: what it names is the builder's claim.

More than :data:`MAX_PROVIDERS` packages shipping it where the tool looks
first (``config.h``) name none: the file is likely the sdist's own.
Several packages may ship the same file (``curl-config``: libcurl4-openssl-dev,
libcurl4-gnutls-dev, libcurl4-nss-dev).  :func:`choose` takes, in this order:
the one whose file is where the tool looked first (``/usr/include/ldap.h``
before ``/usr/include/mailutils/ldap.h``; a multiarch directory counts as no
directory); one that is installed; one named for what was wanted (``cargo``
for cargo, libkrb5-dev before heimdal-dev for ``krb5-config``); a ``-dev``
package (libpython3.11-dev before libpython3.11-dbg); the one with
most of its direct ``Depends`` installed (its runtime sibling: libcurl3-gnutls
for libcurl4-gnutls-dev); the first by name.  The others at the same
depth are kept as alternatives.

Never raises: a missing tool, a timeout or an unreadable cache gives None (or
no cache), and is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .diagnosis import WANTED_KINDS, Wanted
from .limits import DEBIAN_PACKAGE
from .storage import atomic_write

log = logging.getLogger("piwheels.debian_lookup")

#: How long one ``apt-file``, ``dpkg`` or ``apt-cache`` run may take.
LOOKUP_TIMEOUT_S = 120.0
#: Debian Policy 5.6.1: lower case letters, digits, + - . ; at least two, starting
#: alnum; and no longer than the column it is stored in.
PACKAGE_NAME = re.compile(rf"[a-z0-9][a-z0-9+.-]{{1,{DEBIAN_PACKAGE - 1}}}")
#: What the cache key is made of: apt's lists (Contents among them) and its sources.
APT_LISTS = Path("/var/lib/apt/lists")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
CACHE_VERSION = 2
#: dpkg's record of what is installed: the ranks of providers change with it.
DPKG_STATUS = Path("/var/lib/dpkg/status")
#: The rank :meth:`DebianLookup._ranks` adds for a package that is installed itself.
INSTALLED_RANK = 1000
#: More packages than this shipping the wanted file at the same depth: none is named.
MAX_PROVIDERS = 8
#: A multiarch directory (``x86_64-linux-gnu``), counted as no directory.
MULTIARCH = re.compile(r"[a-z0-9_]+-linux-[a-z0-9_]+")


@dataclass(frozen=True)
class Provider:
    """The Debian package chosen to provide a :class:`~piwheels.diagnosis.Wanted`, and the others."""

    package: str
    alternatives: tuple[str, ...] = ()


def valid_package(name: str) -> bool:
    """Whether *name* is a Debian package name."""
    return PACKAGE_NAME.fullmatch(name) is not None


class DebianLookup:
    """Wanted -> Provider on this host, with an on-disk cache at *cache_path*."""

    def __init__(self, cache_path: Path, *, timeout_s: float = LOOKUP_TIMEOUT_S,
                 apt_lists: Path = APT_LISTS,
                 apt_sources: tuple[Path, ...] = APT_SOURCES) -> None:
        self.cache_path = Path(cache_path)
        self.timeout_s = timeout_s
        self.apt_lists = apt_lists
        self.apt_sources = apt_sources
        #: the last ranks asked, with the dpkg status they were read from
        self._ranked: tuple[object, frozenset[str], dict[str, int]] = (None, frozenset(), {})

    # --- the API ---------------------------------------------------------------

    def package_for(self, wanted: Wanted) -> Optional[Provider]:
        """The package that provides *wanted*, or None (not found, or no tools)."""
        return self.packages_for([wanted]).get(wanted)

    def packages_for(self, wants: Iterable[Wanted]) -> dict[Wanted, Optional[Provider]]:
        """:meth:`package_for` of each of *wants*, with one ``apt-file`` run for all."""
        try:
            return self._packages_for(list(dict.fromkeys(wants)))
        except Exception:  # never take the slave down for a lookup
            log.exception("looking up Debian packages failed")
            return {}

    # --- the work --------------------------------------------------------------

    def _packages_for(self, wants: list[Wanted]) -> dict[Wanted, Optional[Provider]]:
        wants = [w for w in wants if w.kind in WANTED_KINDS and w.patterns()]
        if not wants:
            return {}
        key = self.cache_key()
        cache = self._load_cache(key)
        found: dict[Wanted, dict[str, str]] = {}
        missing = []
        for wanted in wants:
            entry = cache.get(_entry_name(wanted))
            if entry is None:
                missing.append(wanted)
            else:
                found[wanted] = entry
        installed: dict[Wanted, dict[str, str]] = {}
        if missing:
            installed = self._dpkg_search(missing)
            # a header installed only off the compiler's path may be another of
            # that name (config.h): what apt-file knows counts too
            rest = [w for w in missing if not installed.get(w) or _off_path(w, installed[w])]
            searched = self._apt_file_search(rest) if rest else {}
            for wanted in missing:
                if wanted in searched:
                    owners = {**searched[wanted], **installed.get(wanted, {})}
                else:
                    owners = installed.get(wanted)
                if owners is None:
                    continue  # the tools failed: ask again next time
                found[wanted] = owners
                cache[_entry_name(wanted)] = owners
            self._save_cache(key, cache)
        several = {p for owners in found.values() if len(owners) > 1 for p in owners}
        ranks = self._ranks(several) if several else {}
        return {wanted: choose(wanted, owners, ranks) for wanted, owners in found.items()}

    def cache_key(self) -> str:
        """A digest of the apt lists and sources: changes when ``apt-file update`` or
        ``apt update`` fetch anew, or the sources change."""
        digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
        paths: list[Path] = []
        for source in self.apt_sources:
            if source.is_dir():
                paths.extend(sorted(source.iterdir()))
            else:
                paths.append(source)
        try:
            paths.extend(sorted(p for p in self.apt_lists.iterdir() if "Contents" in p.name
                                or p.name.endswith("Release")))
        except OSError:
            pass
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _load_cache(self, key: str) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.cache_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the Debian lookup cache %s: %s", self.cache_path, exc)
            return {}
        if not isinstance(data, dict) or data.get("key") != key:
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {
            name: {p: path for p, path in owners.items()
                   if isinstance(path, str) and valid_package(p)}
            for name, owners in entries.items() if isinstance(owners, dict)
        }

    def _save_cache(self, key: str, entries: dict[str, dict[str, str]]) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_path, json.dumps(
                {"key": key, "entries": entries}, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot write the Debian lookup cache %s: %s", self.cache_path, exc)

    def _run(self, argv: list[str], stdin: str = "") -> Optional[str]:
        """The tool's standard output, or None where it is missing, fails or times out."""
        path = shutil.which(argv[0])
        if path is None:
            log.warning("%s is not installed: Debian packages are not named", argv[0])
            return None
        try:
            done = subprocess.run(
                [path, *argv[1:]], input=stdin, capture_output=True, text=True,
                errors="replace", timeout=self.timeout_s,
                env={"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s failed: %s", argv[0], exc)
            return None
        # dpkg -S and apt-file exit 1 when nothing matches: that is an answer
        if done.returncode not in (0, 1):
            log.warning("%s exited %d: %s", argv[0], done.returncode, done.stderr.strip()[:300])
            return None
        return done.stdout

    def _dpkg_search(self, wants: list[Wanted]) -> dict[Wanted, dict[str, str]]:
        output = self._run(["dpkg", "-S", *sorted({w.glob() for w in wants})])
        return _owners(output or "", wants)

    def _apt_file_search(self, wants: list[Wanted]) -> dict[Wanted, dict[str, str]]:
        # one run for all: apt-file assembles the lines of --from-file into one regex
        patterns = "".join(f"{p}\n" for p in sorted({p for w in wants for p in w.patterns()}))
        output = self._run(["apt-file", "search", "-x", "--from-file", "-"], stdin=patterns)
        if output is None:
            return {}
        found = _owners(output, wants)
        return {w: found.get(w, {}) for w in wants}

    def _ranks(self, candidates: set[str]) -> dict[str, int]:
        """How many of each candidate's direct Depends are installed (asked again only
        when the candidates or dpkg's status change)."""
        try:
            info = DPKG_STATUS.stat()
            status_key: object = (info.st_mtime_ns, info.st_size)
        except OSError:
            status_key = None
        known_key, known, ranks = self._ranked
        if status_key is not None and status_key == known_key and candidates <= known:
            return ranks
        ranks = self._ask_ranks(candidates)
        self._ranked = (status_key, frozenset(candidates), ranks)
        return ranks

    def _ask_ranks(self, candidates: set[str]) -> dict[str, int]:
        names = sorted(candidates)
        depends = self._run(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                             "--no-conflicts", "--no-breaks", "--no-replaces",
                             "--no-enhances", *names])
        status = self._run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n"])
        installed = {line.split()[1].split(":")[0] for line in (status or "").splitlines()
                     if line.startswith("ii") and len(line.split()) > 1}
        ranks = {name: (INSTALLED_RANK if name in installed else 0) for name in names}
        current: Optional[str] = None
        for line in (depends or "").splitlines():
            if not line.startswith(" "):
                current = line.strip() if line.strip() in ranks else None
            elif current is not None and line.strip().startswith("Depends:"):
                if line.split(":", 1)[1].strip() in installed:
                    ranks[current] += 1
        return ranks


def choose(wanted: Wanted, owners: dict[str, str], ranks: dict[str, int]) -> Optional[Provider]:
    """The provider of *wanted* among *owners* (package -> the path it ships), by the
    rule of this module; *ranks* gives each package's installed direct Depends
    (:data:`INSTALLED_RANK` more if it is installed itself)."""
    packages = sorted(p for p in owners if valid_package(p))
    if not packages:
        return None
    stem = _stem(wanted.name)

    def key(package: str) -> tuple[int, int, int, int, int, str]:
        named = 0 if package == wanted.name else 1 if len(stem) >= 3 and stem in package else 2
        rank = ranks.get(package, 0)
        return (_depth(owners[package]), -(rank >= INSTALLED_RANK), named,
                0 if package.endswith("-dev") else 1, -rank, package)

    best = min(packages, key=key)
    level = [p for p in packages if _depth(owners[p]) == _depth(owners[best])]
    if len(level) > MAX_PROVIDERS:
        # config.h, version.h: a file of that name in many packages is likely
        # the sdist's own, and no package can be named for it
        log.info("%s: %d packages ship it; naming none", wanted, len(level))
        return None
    # the alternatives: those as likely by where their file is, best first
    return Provider(best, tuple(sorted((p for p in level if p != best), key=key)))


def _off_path(wanted: Wanted, owners: dict[str, str]) -> bool:
    """Whether every installed header of *owners* is off the compiler's own path."""
    top = _depth(f"/usr/include/{wanted.name}")
    return wanted.kind == "header" and all(_depth(path) > top for path in owners.values())


def _depth(path: str) -> int:
    """How many directories deep *path* is, a multiarch directory not counted."""
    return sum(1 for part in path.split("/")[1:-1] if not MULTIARCH.fullmatch(part))


def _stem(name: str) -> str:
    """What a package providing *name* is likely named for: ``krb5`` of ``krb5-config``."""
    base = name.rsplit("/", 1)[-1].lower()
    base = re.sub(r"\.(h|hh|hpp|hxx|pc)$|\.so(\.[\d.]*)?$|[-_]config$", "", base)
    return base[3:] if base.startswith("lib") else base


def _entry_name(wanted: Wanted) -> str:
    return f"{wanted.kind}:{wanted.name}"


def _owners(output: str, wants: list[Wanted]) -> dict[Wanted, dict[str, str]]:
    """``package[, package]: /path`` lines (dpkg -S, apt-file) -> each want's packages,
    each with the least deep of its paths that provide the want."""
    found: dict[Wanted, dict[str, str]] = {}
    for line in output.splitlines():
        if line.startswith("diversion "):
            continue
        owners, sep, path = line.partition(": ")
        if not sep:
            continue
        path = path.strip()
        for wanted in wants:
            if not wanted.matches(path):
                continue
            for owner in owners.split(","):
                owner = owner.strip().split(":", 1)[0]
                if valid_package(owner):
                    known = found.setdefault(wanted, {}).get(owner)
                    if known is None or (_depth(path), path) < (_depth(known), known):
                        found[wanted][owner] = path
    return found
