"""schema/schema.sql is the queue's schema as the migrations leave it: applied to an
empty database, it gives the same catalog (schema ``receiptq``) as the migrations
(the test's database is cloned from a template they were applied to)."""

from __future__ import annotations

import difflib
from importlib import resources

import psycopg

from receiptq.tools.schema_dump import COMMAND

#: The catalog of schema ``receiptq``, one sorted list of rows per kind of object.
CATALOG: dict[str, str] = {
    "tables": """
        SELECT c.relname, c.relkind, c.relpersistence, obj_description(c.oid, 'pg_class')
        FROM pg_class c WHERE c.relnamespace = 'receiptq'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               col_description(c.oid, a.attnum),
               rank() OVER (PARTITION BY c.oid ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'receiptq'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'receiptq'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'receiptq'::regnamespace""",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc p WHERE p.pronamespace = 'receiptq'::regnamespace""",
    "triggers": """
        SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'receiptq'::regnamespace AND NOT t.tgisinternal""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'receiptq'""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, cycle
        FROM pg_sequences WHERE schemaname = 'receiptq'""",
    "types": """
        SELECT t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod)
        FROM pg_type t WHERE t.typnamespace = 'receiptq'::regnamespace
          AND t.typtype IN ('d', 'e', 'c') AND t.typrelid = 0""",
}


def catalog(url: str) -> dict[str, list[str]]:
    """Every kind of object of schema ``receiptq``: sorted rows, one string each."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            kind: sorted(repr(row) for row in conn.execute(query).fetchall())
            for kind, query in CATALOG.items()
        }


def schema_sql() -> str:
    return (resources.files("receiptq.schema") / "schema.sql").read_text()


def differences(expected: dict[str, list[str]], got: dict[str, list[str]]) -> list[str]:
    lines: list[str] = []
    for kind in CATALOG:
        if expected[kind] != got[kind]:
            lines.append(f"{kind}:")
            lines += difflib.unified_diff(
                expected[kind], got[kind], "migrations", "schema.sql", lineterm="", n=0
            )
    return lines


def test_schema_sql_gives_the_catalog_the_migrations_give(database_url, empty_database_url):
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(schema_sql())
    migrated, from_file = catalog(database_url), catalog(empty_database_url)
    assert migrated["tables"] and migrated["functions"], "the migrated catalog is empty"
    diff = differences(migrated, from_file)
    assert not diff, (
        f"src/receiptq/schema/schema.sql does not match the migrations: regenerate it "
        f"with `{COMMAND}`\n" + "\n".join(diff[:60])
    )


def test_the_comparison_sees_a_changed_function(database_url, empty_database_url):
    """A schema.sql that differs from the migrations in one function fails the check."""
    text = schema_sql()
    changed = text.replace("RETURN NEW;", "RETURN NEW; -- changed", 1)
    assert changed != text
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(changed)
    diff = differences(catalog(database_url), catalog(empty_database_url))
    assert diff and diff[0] == "functions:"
