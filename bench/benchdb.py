"""A throw-away piwheels database for one benchmark run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

#: The PostgreSQL server benchmarks use unless told otherwise (superuser, trust).
DEFAULT_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
BIN = Path(sys.executable).parent


@contextmanager
def throwaway_database(server: str = DEFAULT_SERVER) -> Iterator[tuple[str, str]]:
    """(superuser DSN, master-role DSN) of a new schema-v-current database, dropped after."""
    name = f"piwheels_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
    dsn = sa.engine.make_url(server).set(database=name).render_as_string(False)
    master_dsn = sa.engine.make_url(dsn).set(username=name).render_as_string(False)
    try:
        subprocess.run([str(BIN / "piw-initdb"), "--dsn", dsn, "--user", name, "-y", "-q"],
                       check=True)
        yield dsn, master_dsn
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()
