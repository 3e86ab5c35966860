"""Opening database connections, and turning driver errors into one-line messages."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from .errors import ConfigError, DatabaseUnavailable, PermissionProblem


def first_line(exc: BaseException) -> str:
    """The driver's message without its continuation lines and SQL echo."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def make_engine(dsn: str, *, pool_size: int = 1) -> Engine:
    """An engine for *dsn* that keeps at most *pool_size* connections."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        raise ConfigError(f"cannot parse database URL {dsn!r}") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"piwheels needs PostgreSQL, not {url.get_backend_name()!r} ({dsn})")
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


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn connection and permission failures into piwheels errors."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        if exc.connection_invalidated or "connection" in str(exc.orig).lower():
            raise DatabaseUnavailable(
                f"cannot connect to the database at {describe(engine.url)}: {first_line(exc)}"
            ) from None
        raise
    except sa.exc.ProgrammingError as exc:
        code = getattr(exc.orig, "pgcode", None)
        if code == "42501":  # insufficient_privilege
            raise PermissionProblem(
                f"the database refused: {first_line(exc)}"
            ) from None
        raise
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(
                f"lost the connection to {describe(engine.url)}: {first_line(exc)}"
            ) from None
        raise
