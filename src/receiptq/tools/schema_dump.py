"""``python -m receiptq.tools.schema_dump > src/receiptq/schema/schema.sql``: the queue's
schema as its migrations leave it, for reading.

It migrates a scratch database (``receiptq_schema_<random>``, created on the server
of ``--url`` or ``RECEIPTQ_DATABASE_URL`` and dropped at the end) with the queue's
chain (``schema/migrations``) and prints ``pg_dump --schema-only --schema=receiptq``
of it, without the lines that change from one run or pg_dump release to the next.
``pg_dump`` must be on the PATH, of the server's major version or newer.
tests/integration/test_schema_sql.py checks that the file matches the migrations.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import subprocess
import sys

from receiptq import db
from receiptq.config import database_url
from receiptq.tools.scratch import drop_database, recreate_database

#: How to bring schema.sql up to date (said by the test when it is out of date).
COMMAND = "python -m receiptq.tools.schema_dump > src/receiptq/schema/schema.sql"

HEADER = f"""\
-- The queue's schema (``receiptq``) as the migrations in schema/migrations/ leave it:
-- every table, index, constraint, function, trigger and view in one file, to read.
-- Generated: do not edit. Databases are set up and upgraded by the migrations
-- (`receiptq db migrate`), never from this file. Regenerate after adding a migration:
--   {COMMAND}
-- (tests/integration/test_schema_sql.py fails until it matches the migrations.)
"""

#: pg_dump lines that differ between runs or releases: its version, and the random
#: key of psql's \\restrict (pg_dump 15.14 and later).
_NOISE = re.compile(r"^(-- Dumped (from|by) .*|\\(un)?restrict .*)$")
#: pg_dump's banners, at the start and the end.
_BANNER = re.compile(r"^--\n-- PostgreSQL database dump( complete)?\n--\n", re.MULTILINE)


def clean(dump: str) -> str:
    """pg_dump's output without the lines that change between runs, blank runs folded."""
    lines = [line for line in dump.splitlines() if not _NOISE.match(line)]
    text = _BANNER.sub("", "\n".join(lines) + "\n")
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return HEADER + "\n" + text + "\n"


def pg_dump(url: str) -> str:
    """``pg_dump`` of the receiptq schema of ``url``: structure only, no owners or grants."""
    binary = shutil.which("pg_dump")
    if binary is None:
        raise SystemExit(
            "receiptq: error: pg_dump is not on the PATH: install the PostgreSQL client"
        )
    command = [binary, "--schema-only", "--schema=receiptq", "--no-owner", "--no-privileges",
               f"--dbname={url}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise SystemExit(f"receiptq: error: pg_dump failed: {first}")
    return done.stdout


def dump(server_url: str) -> str:
    """schema.sql's text: the queue's chain applied to a scratch database, dumped."""
    name = f"receiptq_schema_{secrets.token_hex(4)}"
    url = recreate_database(server_url, name)
    try:
        db.migrate(url)
        return clean(pg_dump(url))
    finally:
        drop_database(server_url, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m receiptq.tools.schema_dump",
        description="Print the queue's schema as the migrations leave it (schema.sql). "
        f"Usage: {COMMAND}",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="a PostgreSQL server to migrate a scratch database on (default: "
        "RECEIPTQ_DATABASE_URL, else the embedded server)",
    )
    args = parser.parse_args(argv)
    sys.stdout.write(dump(database_url(args.url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
