"""Opening database connections, and turning driver errors into one-line messages."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from .errors import ConfigError, DatabaseUnavailable, DataRefused, PermissionProblem


def first_line(exc: BaseException) -> str:
    """The driver's message without its continuation lines and SQL echo."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def database_url(dsn: str) -> URL:
    """*dsn* parsed, or :class:`~piwheels.errors.ConfigError` unless it names a
    PostgreSQL database."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        raise ConfigError(f"cannot parse database URL {dsn!r}") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"piwheels needs PostgreSQL, not {url.get_backend_name()!r} ({dsn})")
    return url


def make_engine(dsn: str, *, pool_size: int = 1) -> Engine:
    """An engine for *dsn* that keeps at most *pool_size* connections."""
    url = database_url(dsn)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "piwheels"},
    )


def describe(url: sa.engine.URL) -> str:
    """The URL without its password, for messages."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


#: SQLSTATE classes of a lost or refused connection (08: connection exception,
#: 57: operator intervention such as pg_terminate_backend or a shutdown).
_UNAVAILABLE_CLASSES = ("08", "57")
#: SQLSTATE classes of a value the database refuses (22: data exception,
#: 23: integrity constraint violation).
_REFUSED_CLASSES = ("22", "23")


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn the database's refusals into piwheels errors, so no caller needs SQLAlchemy's.

    A lost, unreachable or refusing server becomes
    :class:`~piwheels.errors.DatabaseUnavailable`, a missing right
    :class:`~piwheels.errors.PermissionProblem`, and a value the schema
    refuses :class:`~piwheels.errors.DataRefused`; anything else (a bug in a
    query) passes through unchanged.
    """
    try:
        yield
    except DBAPIError as exc:
        code = getattr(exc.orig, "pgcode", None) or ""
        if exc.connection_invalidated or code[:2] in _UNAVAILABLE_CLASSES or (
                isinstance(exc, sa.exc.OperationalError) and not code):
            # libpq's own failures (no host, refused, auth) carry no SQLSTATE
            how = "lost the connection to" if exc.connection_invalidated else "cannot connect to"
            raise DatabaseUnavailable(
                f"{how} the database at {describe(engine.url)}: {first_line(exc)}"
            ) from None
        if code == "42501":  # insufficient_privilege
            raise PermissionProblem(f"the database refused: {first_line(exc)}") from None
        if code[:2] in _REFUSED_CLASSES:
            raise DataRefused(f"the database refused it: {first_line(exc)}") from None
        raise
