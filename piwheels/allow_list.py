"""Which upstream projects a farm follows and builds (all of them when no patterns are set)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Iterable, Optional

from packaging.utils import canonicalize_name

from .errors import ConfigError


class AllowList:
    """Shell-style patterns matched against canonical project names."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(
            canonicalize_name(p) if not any(c in p for c in "*?[") else p.lower()
            for p in (p.strip() for p in patterns) if p
        )
        self._regex: Optional[re.Pattern] = None
        if self.patterns:
            self._regex = re.compile("|".join(fnmatch.translate(p) for p in self.patterns))

    @classmethod
    def from_options(cls, patterns: Iterable[str], path: Optional[str]) -> "AllowList":
        patterns = list(patterns or ())
        if path:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the allow-list file {path}: {exc.strerror}") \
                    from None
            patterns += [line.split("#", 1)[0] for line in lines]
        return cls(patterns)

    @property
    def everything(self) -> bool:
        return self._regex is None

    @property
    def names(self) -> Optional[tuple[str, ...]]:
        """The projects named, when every pattern is a plain name (no wildcards); else None."""
        if not self.patterns or any(c in p for p in self.patterns for c in "*?["):
            return None
        return self.patterns

    def allows(self, canonical: str) -> bool:
        return self._regex is None or self._regex.fullmatch(canonical) is not None

    def __repr__(self) -> str:
        return f"AllowList({list(self.patterns)!r})"
