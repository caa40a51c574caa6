"""Fresh databases for the tools that measure or break receiptq (bench, chaos): each
run starts from a database of its own, dropped and created on a server."""

from __future__ import annotations

import re

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from receiptq import db

#: What a tool accepts as the name of its database (composed in as an identifier).
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create the database ``name`` on the server of ``server_url``; its URL."""
    _run(server_url, name, ("scratch_drop_database", "scratch_create_database"))
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name`` (made by :func:`recreate_database`), if it exists."""
    _run(server_url, name, ("scratch_drop_database",))


def _run(server_url: str, name: str, queries: tuple[str, ...]) -> None:
    """Run queries about the database ``name`` from another database of its server."""
    if not DATABASE_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    admin_url = server_url
    if conninfo_to_dict(server_url).get("dbname") == name:
        admin_url = make_conninfo(server_url, dbname="postgres")
    with db.connect(admin_url) as conn:
        for query in queries:
            conn.execute(sql.SQL(db.query(query)).format(database=sql.Identifier(name)))
