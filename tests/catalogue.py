"""A comparable picture of a database's schema, read from the PostgreSQL catalogue.

Two databases with equal snapshots have the same tables, columns, constraints,
indexes, functions, triggers, views and privileges, whatever route built them.
"""

from __future__ import annotations

import sqlalchemy as sa

QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length,
               is_nullable, column_default, is_identity, ordinal_position
        FROM information_schema.columns
        WHERE table_schema = 'public'
        ORDER BY table_name, column_name
    """,
    "constraints": """
        SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public'
        ORDER BY 1, 2
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY 1, 2
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' ORDER BY 1, 2
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
        ORDER BY 1, 2
    """,
    "views": """
        SELECT viewname, definition FROM pg_views
        WHERE schemaname = 'public' ORDER BY 1
    """,
    "table_privileges": """
        SELECT table_name, grantee, privilege_type
        FROM information_schema.role_table_grants
        WHERE table_schema = 'public' ORDER BY 1, 2, 3
    """,
    "sequence_privileges": """
        SELECT c.relname, a.grantee::regrole::text, a.privilege_type
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(c.relacl) a
        WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1, 2, 3
    """,
    "schema_privileges": """
        SELECT a.grantee::regrole::text, a.privilege_type
        FROM pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspname = 'public' ORDER BY 1, 2
    """,
}


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.exec_driver_sql(query)]
                for name, query in QUERIES.items()
            }
    finally:
        engine.dispose()


def differences(left: dict, right: dict) -> list[str]:
    """Human-readable lines naming what one snapshot has that the other lacks."""
    lines = []
    for name in QUERIES:
        a, b = set(left[name]), set(right[name])
        lines += [f"{name}: only in first: {row}" for row in sorted(a - b, key=repr)]
        lines += [f"{name}: only in second: {row}" for row in sorted(b - a, key=repr)]
    return lines
