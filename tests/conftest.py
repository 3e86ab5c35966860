"""Fixtures shared by every test: throw-away PostgreSQL databases and roles.

Tests talk to a real PostgreSQL server (``PIWHEELS_TEST_DSN``, by default the
local one as user postgres).  Each run makes its own databases and roles with
unique names and drops them at the end.  If no server answers, the run stops
at once with one message saying how to start one.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from fake_index import TEST_CACHE, FakeIndex, download_backend_wheels
from farm import Farm
from sdist_factory import make_sdist

from piwheels.db import Database
from piwheels.initdb import initdb

#: how tests are spread over pytest-xdist workers (tests/parallel.py)
pytest_plugins = ["parallel"]

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN_ID = uuid.uuid4().hex[:8]


def server_dsn() -> str:
    return os.environ.get("PIWHEELS_TEST_DSN", DEFAULT_TEST_DSN)


def _admin_engine() -> sa.engine.Engine:
    return sa.create_engine(
        make_url(server_dsn()).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 5},
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.scalar(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0]
        pytest.exit(
            f"no PostgreSQL server answers at {server_dsn()} ({first}). Start the local one "
            "with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point PIWHEELS_TEST_DSN at a server where you may create databases.",
            returncode=3,
        )
    finally:
        engine.dispose()


class Postgres:
    """Makes databases and roles for one test run and drops them afterwards."""

    def __init__(self) -> None:
        self.engine = _admin_engine()
        self.databases: list[str] = []
        self.roles: list[str] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"piwheels_test_{RUN_ID}_{kind}{self._count}"

    def dsn(self, database: str, user: str | None = None) -> str:
        url = make_url(server_dsn()).set(database=database, drivername="postgresql+psycopg2")
        if user is not None:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)

    def create_database(self) -> str:
        name = self._name("db")
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.databases.append(name)
        return name

    def create_role(self) -> str:
        name = self._name("role")
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
        self.roles.append(name)
        return name

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            for name in self.databases:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for name in self.roles:
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        self.engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.drop_all()


@pytest.fixture(scope="session")
def master_role(postgres: Postgres) -> str:
    """The unprivileged role the master connects as."""
    return postgres.create_role()


@pytest.fixture
def empty_database(postgres: Postgres) -> str:
    """A new, empty database; returns its superuser DSN."""
    return postgres.dsn(postgres.create_database())


@pytest.fixture(scope="session")
def schema_database(postgres: Postgres, master_role: str) -> dict[str, str]:
    """One database with the current schema, shared by the data-layer tests."""
    name = postgres.create_database()
    superuser = postgres.dsn(name)
    with open(os.devnull, "w") as quiet:
        initdb(superuser, master_role, assume_yes=True, out=quiet)
    return {"superuser": superuser, "master": postgres.dsn(name, master_role)}


@pytest.fixture(scope="session")
def empty_schema(schema_database: dict[str, str]) -> Callable[[], str]:
    """Empties the shared schema database (packages, ABIs, policy) when called, and
    returns the master role's DSN (for fixtures wider than one test)."""
    def empty() -> str:
        engine = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE packages, build_targets CASCADE")
            conn.exec_driver_sql("UPDATE configuration SET pypi_serial = 0")
            conn.exec_driver_sql(
                "UPDATE configuration SET build_policy = 'all', build_prereleases = false, "
                "configured_policy = NULL, configured_prereleases = NULL, policy_pending = false")
        engine.dispose()
        return schema_database["master"]
    return empty


@pytest.fixture
def master_dsn(empty_schema: Callable[[], str]) -> str:
    """The master role's DSN to the shared schema database, emptied before each test."""
    return empty_schema()


@pytest.fixture
def db(master_dsn: str) -> Iterator[Database]:
    database = Database(master_dsn)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def make_db() -> Iterator[Callable[[str], Database]]:
    made: list[Database] = []

    def make(dsn: str) -> Database:
        database = Database(dsn)
        made.append(database)
        return database

    yield make
    for database in made:
        database.close()


# --- a local package index that pip can build from --------------------------
# It serves the sdists a test adds plus the build backend wheels (setuptools,
# wheel, flit-core, hatchling, ...), fetched once and kept in the tests' cache.


@pytest.fixture(scope="session")
def build_backends() -> list[Path]:
    """The build backend wheels, downloaded into the tests' cache on the first run only."""
    return download_backend_wheels(TEST_CACHE / "build-backends")


@pytest.fixture(scope="session")
def build_index(build_backends: list[Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeIndex]:
    """A running local index (``.url`` for pip, ``.add(path)`` to publish a file)."""
    index = FakeIndex(tmp_path_factory.mktemp("build-index"))
    for wheel in build_backends:
        index.add(wheel)
    with index:
        yield index


@pytest.fixture(scope="session")
def build_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pip cache shared by every build of the session, as a slave shares its cache."""
    return tmp_path_factory.mktemp("build-cache")


# --- a farm of real daemons -------------------------------------------------------

@pytest.fixture
def farm(tmp_path, master_dsn, build_index):
    farm = Farm(tmp_path, master_dsn, build_index.url)
    try:
        yield farm
    finally:
        farm.stop()


#: release times of test releases count back from here (newest built first)
RELEASE_BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def release(db, build_index, tmp_path):
    """Make an sdist, serve it, and record the release (newer ones first in the queue)."""
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    count = [0]

    def add(name: str, version: str = "1.0", **kwargs) -> Path:
        path = make_sdist(sdists, name, version, **kwargs)
        build_index.add(path)
        count[0] += 1
        db.add_package(name)
        db.add_version(name, version, released=RELEASE_BASE_TIME - timedelta(hours=count[0]),
                       has_sdist=True)
        return path

    return add
