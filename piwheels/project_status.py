"""PEP 792 project status: which statuses there are and how two of them combine.

A project has one status upstream (the index it follows) and may have one set
by the farm's operator.  The farm shows and acts on the stricter of the two,
in the order of :data:`PROJECT_STATUSES` (by what each lets an index do): an
operator can hold back a project upstream still serves, but cannot serve one
upstream has quarantined.  A quarantined project's files are withheld, not
deleted, and its builds stop until the status is lifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import limits
from .errors import InvalidProjectStatus

#: Every status, mildest first.  ``deprecated`` changes nothing an index does
#: (PEP 792), ``archived`` stops new uploads, ``quarantined`` withholds every file.
PROJECT_STATUSES = ("active", "deprecated", "archived", "quarantined")
ACTIVE = "active"
#: The status whose project is withheld: nothing listed, nothing built.
QUARANTINED = "quarantined"
#: The longest status reason kept (the database column's length).
MAX_REASON_LENGTH = limits.REASON


@dataclass(frozen=True)
class ProjectStatus:
    """The status in force for a project, with its reason and who set it."""

    status: str = ACTIVE
    reason: Optional[str] = None
    #: "upstream" or "operator" (None while the project is simply active)
    set_by: Optional[str] = None

    @property
    def withheld(self) -> bool:
        return self.status == QUARANTINED


def check_status(value: object) -> str:
    """*value* if it is a status, else :class:`InvalidProjectStatus` naming the valid ones."""
    if value not in PROJECT_STATUSES:
        raise InvalidProjectStatus(
            f"unknown project status {value!r}; choose one of {', '.join(PROJECT_STATUSES)}")
    return value  # type: ignore[return-value]


def clean_reason(reason: object) -> Optional[str]:
    """A reason as stored: text cut to :data:`MAX_REASON_LENGTH`, None when empty."""
    if not isinstance(reason, str) or not reason.strip():
        return None
    return reason.strip()[:MAX_REASON_LENGTH]


def combine(upstream: str, upstream_reason: Optional[str],
            operator: Optional[str], operator_reason: Optional[str]) -> ProjectStatus:
    """The status in force: the stricter of upstream's and the operator's (the
    operator's on a tie, as it is the more deliberate)."""
    rank = PROJECT_STATUSES.index
    if operator is not None and rank(operator) >= rank(upstream):
        return ProjectStatus(operator, operator_reason, "operator")
    if upstream == ACTIVE:
        return ProjectStatus()
    return ProjectStatus(upstream, upstream_reason, "upstream")
