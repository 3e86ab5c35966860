"""The errors piwheels raises on purpose, each with a message an operator can act on.

Command-line entry points print ``str(error)`` as one line and exit non-zero;
daemons log it and carry on where that is safe.
"""

from __future__ import annotations


class PiwheelsError(Exception):
    """Base of every deliberate piwheels error."""


class ConfigError(PiwheelsError):
    """An option's value cannot be used."""


class BindError(ConfigError):
    """A socket address that cannot be listened on or connected to."""


class DatabaseUnavailable(PiwheelsError):
    """The database server could not be reached or refused the connection."""


class DataRefused(PiwheelsError, ValueError):
    """The database refused a value (too long, or against a constraint); nothing was changed."""


class InvalidRequest(PiwheelsError, ValueError):
    """A request that does not fit its protocol, refused before it is sent."""


class SchemaError(PiwheelsError):
    """The database schema is missing, broken, or of the wrong version."""


class SchemaVersionMismatch(SchemaError):
    """The database schema and this code disagree on the version."""

    def __init__(self, found: int | None, expected: int) -> None:
        self.found = found
        self.expected = expected
        if found is None:
            msg = (
                f"the database has no piwheels schema; create it with "
                f"piw-initdb (this code needs version {expected})"
            )
        elif found < expected:
            msg = (
                f"the database schema is version {found} but this code needs "
                f"{expected}; upgrade it with piw-initdb"
            )
        else:
            msg = (
                f"the database schema is version {found}, newer than this code "
                f"knows ({expected}); upgrade piwheels"
            )
        super().__init__(msg)


class PermissionProblem(PiwheelsError):
    """The database role lacks a right the operation needs."""


class InvalidName(PiwheelsError, ValueError):
    """A project name that is not a valid distribution name."""


class InvalidVersion(PiwheelsError, ValueError):
    """A release version that does not follow the version specification."""


class InvalidPolicy(PiwheelsError, ValueError):
    """A build policy that cannot be understood or applied; the message says why."""


class UnknownPackage(PiwheelsError, LookupError):
    """An operation named a project the database does not hold."""


class UnknownVersion(PiwheelsError, LookupError):
    """An operation named a release the database does not hold."""


class Aborted(PiwheelsError):
    """The operator declined to go ahead."""


class WheelError(PiwheelsError, ValueError):
    """A wheel that cannot be accepted; the message says why."""


class InvalidProjectStatus(PiwheelsError, ValueError):
    """A project status (PEP 792) this farm does not know."""


class FetchError(PiwheelsError):
    """The fetch phase of a build could not get what the build needs; the message says why."""
