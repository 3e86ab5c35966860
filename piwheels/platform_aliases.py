"""Platform aliases: a wheel built for one platform also published under another's name.

Raspberry Pi Zero and 1 boards run an ARMv6 userland, whose pip asks for
``linux_armv6l`` wheels; the wheels a 32-bit Raspberry Pi OS builder makes
(``linux_armv7l``) serve them too.  With ``--platform-alias
linux_armv7l=linux_armv6l`` every wheel tagged only for ``linux_armv7l`` is
also published as the same bytes under the name its tags would have for
``linux_armv6l``: a hard link in the output tree, with its own ``.metadata``
(a hard link too), listed in the simple index with its own hash entry (the
same SHA-256, since the bytes are the same).  Off by default.

An alias is derived, never recorded: the database holds the built file only,
and the index writer, the reconciliation at start and removals work out the
alias names from it.  An alias never stands in for a real file: where the
database records a wheel of the alias name (a real ``linux_armv6l`` build),
that file is published and no alias is made.

Names are taken apart and put together by :mod:`packaging` (a wheel's tags
are :class:`~packaging.tags.Tag` objects), and every alias name is parsed
again to check it says what was meant.  Only a wheel all of whose tags are
for the aliased platform has an alias (not a ``manylinux`` one, nor a
compressed set mixing platforms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .errors import ConfigError
from .tags import platform_tag_problem


@dataclass(frozen=True)
class PlatformAliases:
    """The configured aliases: (built platform, alias platform) pairs; none: off."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str], option: str = "--platform-alias") -> "PlatformAliases":
        """From ``BUILT=ALIAS`` strings (e.g. ``linux_armv7l=linux_armv6l``);
        :class:`ConfigError` naming *option* if one is not usable."""
        pairs: list[tuple[str, str]] = []
        for spec in specs:
            built, sep, alias = str(spec).partition("=")
            built, alias = built.strip(), alias.strip()
            if not sep:
                raise ConfigError(f"{option} {spec!r}: write BUILT=ALIAS, like "
                                  f"linux_armv7l=linux_armv6l")
            for tag in (built, alias):
                problem = platform_tag_problem(tag)
                if problem is not None:
                    raise ConfigError(f"{option} {spec!r}: {problem}")
            if built == alias:
                raise ConfigError(f"{option} {spec!r}: a platform cannot be its own alias")
            if (built, alias) in pairs:
                raise ConfigError(f"{option} {spec!r} is given twice")
            pairs.append((built, alias))
        built_ones = {b for b, _ in pairs}
        for built, alias in pairs:
            if alias in built_ones:
                raise ConfigError(
                    f"{option} {built}={alias}: {alias} is itself aliased; aliases do not chain "
                    f"(name each platform's aliases directly)")
        aliased = [a for _, a in pairs]
        for alias in aliased:
            if aliased.count(alias) > 1:
                raise ConfigError(f"{option}: {alias} is the alias of two platforms; a file "
                                  f"of that name could be either")
        return cls(tuple(pairs))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def names(self, filename: str) -> tuple[str, ...]:
        """The alias file names of the wheel *filename* (none: it has no alias)."""
        if not self.pairs:
            return ()
        try:
            name, version, build, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return ()
        platforms = {tag.platform for tag in tags}
        if len(platforms) != 1:
            return ()
        (platform,) = platforms
        found = []
        for built, alias in self.pairs:
            if platform == built:
                new_tags = frozenset(Tag(t.interpreter, t.abi, alias) for t in tags)
                made = _wheel_filename(name, version, build, new_tags)
                if made is not None:
                    found.append(made)
        return tuple(found)

    def of(self, filenames: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """{built file: its alias names} for the *filenames* one project publishes,
        without any alias that is itself one of them (a real build of that name wins)."""
        real = set(filenames)
        found = {}
        for filename in sorted(real):
            names = tuple(n for n in self.names(filename) if n not in real)
            if names:
                found[filename] = names
        return found

    def describe(self) -> str:
        """For logs and pages: ``linux_armv7l=linux_armv6l, ...`` (or ``none``)."""
        return ", ".join(f"{b}={a}" for b, a in self.pairs) or "none"


#: No aliases (the default).
NO_ALIASES = PlatformAliases()


def _wheel_filename(name, version, build, tags: frozenset[Tag]) -> Optional[str]:
    """The wheel file name of these parts (the binary distribution format's: the
    name with ``_`` for ``-``, each tag kind a ``.``-joined sorted set), checked by
    parsing it again; None if the tags are not one interpreter x ABI x platform set."""
    interpreters = sorted({t.interpreter for t in tags})
    abis = sorted({t.abi for t in tags})
    platforms = sorted({t.platform for t in tags})
    if len(interpreters) * len(abis) * len(platforms) != len(tags):
        return None
    parts = [str(name).replace("-", "_"), str(version)]
    if build:
        parts.append(f"{build[0]}{build[1]}")
    parts += [".".join(interpreters), ".".join(abis), ".".join(platforms)]
    filename = "-".join(parts) + ".whl"
    try:
        if parse_wheel_filename(filename) != (name, version, build, tags):
            return None
    except InvalidWheelFilename:
        return None
    return filename
