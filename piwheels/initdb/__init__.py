"""piw-initdb: create the piwheels schema or upgrade it to this version.

Run it as a PostgreSQL superuser.  It creates the schema in an empty database,
or applies the upgrade scripts from the installed version, all in one
transaction, and grants the master's role (--user) only the rights it needs.
It changes nothing when the schema is already current, and asks before
changing anything unless given -y.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import cli, schema, settings
from ..connection import describe, first_line, make_engine, translate_errors
from ..errors import Aborted, PermissionProblem, SchemaError

log = logging.getLogger("piwheels.initdb")

_pg_roles = sa.table(
    "pg_roles", sa.column("rolname"), sa.column("rolsuper"), schema="pg_catalog"
)


def is_superuser(conn: Connection) -> bool:
    return bool(conn.scalar(sa.select(_pg_roles.c.rolsuper).where(
        _pg_roles.c.rolname == sa.func.current_user())))


def role_exists(conn: Connection, role: str) -> bool:
    return conn.scalar(sa.select(sa.func.count()).select_from(_pg_roles).where(
        _pg_roles.c.rolname == role)) == 1


def installed_version(conn: Connection) -> Optional[int]:
    """The schema version in the database, or None if it holds no piwheels schema."""
    inspector = sa.inspect(conn)
    tables = inspector.get_table_names(schema="public")
    if "configuration" not in tables:
        if tables:
            raise SchemaError(
                "the database already holds tables that are not a piwheels schema "
                f"({', '.join(sorted(tables)[:5])}); use an empty database"
            )
        return None
    columns = {col["name"] for col in inspector.get_columns("configuration", schema="public")}
    if "schema_version" not in columns:
        raise SchemaError("the database's configuration table is not piwheels'; use an empty database")
    configuration = sa.table("configuration", sa.column("schema_version"))
    version = conn.scalar(sa.select(configuration.c.schema_version))
    if version is None:
        raise SchemaError("the database's configuration table is empty; the schema is damaged")
    return int(version)


def confirm(question: str, assume_yes: bool) -> None:
    """Ask the operator; raise :class:`Aborted` unless they say yes."""
    if assume_yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise Aborted(f"{question} — not asked, as there is no terminal; pass -y to go ahead")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Aborted("nothing was changed")


#: The setting an upgrade script reads for the platform of rows that name none
#: (sql/upgrade_piwheels_4_to_5.sql)
UPGRADE_PLATFORM_SETTING = "piwheels.upgrade_platform"


def apply(conn: Connection, scripts: Sequence[schema.Script], role: str,
          upgrade_platform: Optional[str] = None) -> int:
    """Run *scripts* in one transaction; returns the version they left."""
    role_sql = conn.dialect.identifier_preparer.quote_identifier(role)
    with conn.begin():
        if upgrade_platform is not None:
            conn.execute(sa.select(sa.func.set_config(
                UPGRADE_PLATFORM_SETTING, upgrade_platform, True)))
        for script in scripts:
            log.info("running %s", script.name)
            try:
                conn.exec_driver_sql(script.render(role_sql))
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                raise SchemaError(
                    f"{script.name} failed: {first_line(exc)}; nothing was changed"
                ) from None
        reached = installed_version(conn)
        if reached != scripts[-1].to_version:
            raise SchemaError(
                f"{scripts[-1].name} left the schema at version {reached}, "
                f"not {scripts[-1].to_version}; nothing was changed"
            )
    return reached


def initdb(dsn: str, role: str, assume_yes: bool, out=sys.stdout, *,
           target: int = schema.SCHEMA_VERSION, scripts_dir=None,
           upgrade_platform: Optional[str] = None) -> int:
    """Bring the database at *dsn* to schema *target*; see the module docstring.

    *scripts_dir* replaces the installed sql/ directory (for tests of the
    upgrade mechanism itself).  *upgrade_platform*: the platform of the build
    ABIs an upgrade to schema 5 finds no wheel platform for.
    """
    engine = make_engine(dsn)
    where = describe(engine.url)
    try:
        with translate_errors(engine), engine.connect() as conn:
            if not is_superuser(conn):
                raise PermissionProblem(
                    f"piw-initdb must connect as a PostgreSQL superuser; "
                    f"{conn.scalar(sa.select(sa.func.current_user()))!r} is not one"
                )
            if not role_exists(conn, role):
                raise SchemaError(
                    f"the role {role!r} does not exist; create it first, for example "
                    f"with: CREATE ROLE {role} LOGIN PASSWORD '...'"
                )
            installed = installed_version(conn)
            scripts = schema.plan(installed, target, scripts_dir)
            conn.rollback()
            if not scripts:
                print(f"{where} is already at schema version {installed}; nothing to do", file=out)
                return 0
            if installed is None:
                question = (f"Create the piwheels schema (version {target}) "
                            f"in {where} for role {role!r}?")
            else:
                question = (f"Upgrade {where} from schema version {installed} to "
                            f"{target} ({len(scripts)} step(s))?")
            confirm(question, assume_yes)
            reached = apply(conn, scripts, role, upgrade_platform)
    finally:
        engine.dispose()
    if installed is None:
        print(f"created schema version {reached} in {where}; granted {role!r} its rights", file=out)
    else:
        print(f"upgraded {where} from schema version {installed} to {reached}", file=out)
    return 0


def _main(argv: Optional[Sequence[str]]) -> int:
    options = settings.load(settings.InitdbConfig, "piw-initdb", __doc__.splitlines()[0],
                            settings.INITDB_OPTIONS, argv)
    return initdb(options.dsn, options.user, options.yes,
                  upgrade_platform=options.upgrade_platform)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_main, argv)
