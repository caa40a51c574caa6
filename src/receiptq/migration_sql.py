"""Migrations as plain SQL, for a platform's migration tool (``receiptq db sql``).

The script of a chain's migrations is what :func:`receiptq.db.migrate` runs, written
out: the same lock, the same record table (created if absent), each migration file as
it ships, then the line that records it. A database that ran the script (``psql -v
ON_ERROR_STOP=1 -f``), or the files :func:`write_files` put in a migrations folder
(``supabase/migrations/``), holds the same record as one that ran ``receiptq db
migrate``, which then has nothing to do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import sql

from receiptq import db
from receiptq.db import Chain

#: A migration file written by :func:`write_files`: ``<YYYYMMDDHHMMSS>_receiptq_<name>.sql``.
FILE_NAME = re.compile(r"^(\d{14})_(receiptq_\w+)\.sql$")


def _record(chain: Chain, name: str) -> str:
    schema, table = chain.table.split(".")
    composed = sql.SQL(db.query("migration_record_script")).format(
        table=sql.Identifier(schema, table), name=sql.Literal(name)
    )
    return composed.as_string(None)


def _header(chain: Chain, names: list[str]) -> str:
    """No version in it: a file written by one release stays the same for the next."""
    return (
        f"-- receiptq: the {chain.name} chain's migrations {', '.join(names)}.\n"
        f"-- Recorded in {chain.table}, so that `receiptq db migrate` skips them.\n"
    )


def _body(chain: Chain, name: str, text: str) -> str:
    return f"-- {name}\n{text.strip()}\n{_record(chain, name)}\n"


def _prelude(chain: Chain) -> str:
    return f"{db.query('migration_lock')}\n{db.query(chain.bootstrap)}\n"


def pending(url: str | None, chain: Chain) -> list[tuple[str, str]]:
    """The chain's migrations not applied at ``url`` yet (all of them without a URL)."""
    done = set(db.applied_migrations(url, chain)) if url else set()
    return [(name, text) for name, text in db.migration_files(chain) if name not in done]


def script(chain: Chain, migrations: list[tuple[str, str]]) -> str:
    """One transaction that applies and records ``migrations`` (empty: a comment)."""
    if not migrations:
        return f"-- receiptq: no {chain.name} migration to apply.\n"
    parts = [_header(chain, [n for n, _ in migrations]), "BEGIN;\n", _prelude(chain)]
    parts += ["\n" + _body(chain, name, text) for name, text in migrations]
    parts.append("\nCOMMIT;\n")
    return "".join(parts)


def file_text(chain: Chain, name: str, text: str) -> str:
    """One migration as a file of its own (the platform's tool runs each file)."""
    return _header(chain, [name]) + _prelude(chain) + "\n" + _body(chain, name, text)


def file_stem(chain: Chain, name: str) -> str:
    """``receiptq_0001_queue`` (queue chain), ``receiptq_receipts_0001_...`` (others)."""
    return f"receiptq_{name}" if chain.name == "queue" else f"receiptq_{chain.name}_{name}"


class FileConflict(Exception):
    """A migration file in the folder differs from what receiptq would write."""


def write_files(
    folder: Path, chain: Chain, migrations: list[tuple[str, str]], now: datetime | None = None
) -> list[tuple[Path, bool]]:
    """Write each migration to ``folder`` as ``<timestamp>_<file_stem>.sql``, timestamps
    after every file there (one second apart, in order); a migration whose file is there
    already with the same text is left alone. Returns (path, written) per migration.
    Writes nothing, raising FileConflict, if a file there has other text."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = {
        m.group(2): folder / m.group(0) for p in folder.iterdir() if (m := FILE_NAME.match(p.name))
    }
    stamps = [m.group(1) for p in folder.iterdir() if (m := re.match(r"^(\d{14})_", p.name))]
    start = (now or datetime.now(UTC)).replace(microsecond=0, tzinfo=None)
    if stamps:
        start = max(start, datetime.strptime(max(stamps), "%Y%m%d%H%M%S") + timedelta(seconds=1))
    plan: list[tuple[Path, str, bool]] = []
    for name, text in migrations:
        content = file_text(chain, name, text)
        old = existing.get(file_stem(chain, name))
        if old is not None:
            if old.read_text() != content:
                raise FileConflict(f"{old} differs from receiptq's {name}: not overwritten")
            plan.append((old, content, False))
            continue
        stamp = (start + timedelta(seconds=sum(w for _, _, w in plan))).strftime("%Y%m%d%H%M%S")
        plan.append((folder / f"{stamp}_{file_stem(chain, name)}.sql", content, True))
    for path, content, new in plan:
        if new:
            path.write_text(content)
    return [(path, new) for path, _, new in plan]
