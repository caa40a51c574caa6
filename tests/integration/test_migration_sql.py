"""`receiptq db sql`: the migrations as plain SQL that a platform's tool applies.

The printed script (or the files of `--write DIR`), applied with psql, leaves the
same schema and the same record as `receiptq db migrate`, which then has nothing to
do, and the broker works on the result.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dramatiq
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from receiptq import cli, db
from receiptq.broker import PostgresBroker

ALL = [name for name, _ in db.migration_files()]


@pytest.fixture(autouse=True)
def no_database_in_env(monkeypatch):
    """`db sql` without --url reads the environment: nothing there for these tests."""
    for name in ("RECEIPTQ_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def printed(capsys, *args: str) -> str:
    assert cli.main(["db", "sql", *args]) == 0
    return capsys.readouterr().out


def psql(url: str, path: Path, *options: str) -> None:
    """Apply a file as a platform would: psql, stopping at the first error."""
    params = conninfo_to_dict(url)
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *options, "-f", str(path),
         make_conninfo(**params)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def nothing_to_migrate(url: str, capsys) -> None:
    assert cli.main(["db", "migrate", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == []
    assert db.applied_migrations(url) == ALL


def schema_of(url: str) -> list[tuple]:
    """Columns, functions and indexes of schema receiptq, to compare two databases."""
    with db.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, column_default, is_nullable"
            " FROM information_schema.columns WHERE table_schema = 'receiptq'"
            " AND table_name <> 'migrations' ORDER BY 1, 2"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname, pg_get_functiondef(p.oid) AS body FROM pg_proc AS p"
            " WHERE pronamespace = 'receiptq'::regnamespace ORDER BY 1"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'receiptq' ORDER BY 1"
        ).fetchall()
    return [tuple(row.values()) for row in [*columns, *functions, *indexes]]


def a_job_runs(url: str) -> None:
    broker = PostgresBroker(url, lease_s=5, poll_interval_ms=100)
    ran: list[int] = []

    @dramatiq.actor(queue_name="printed", max_retries=0, broker=broker)
    def note(n: int) -> None:
        ran.append(n)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        note.send(7)
        broker.join("printed", timeout=20_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    assert ran == [7]


def test_the_printed_script_applied_with_psql_leaves_db_migrate_nothing_to_do(
    empty_database_url, database_url, tmp_path, capsys
):
    script = printed(capsys)  # no URL: every migration
    assert script.count("\nBEGIN;\n") == 1 and script.endswith("\nCOMMIT;\n")
    for name in ALL:
        assert f"-- {name}\n" in script
        assert f'"receiptq"."migrations" (name) VALUES (\'{name}\');\n' in script
    (tmp_path / "receiptq.sql").write_text(script)
    psql(empty_database_url, tmp_path / "receiptq.sql")
    nothing_to_migrate(empty_database_url, capsys)
    assert schema_of(empty_database_url) == schema_of(database_url)  # as `db migrate` left it
    assert "no queue migration to apply" in printed(capsys, "--url", empty_database_url)
    assert printed(capsys, "--url", empty_database_url, "--all") == script
    a_job_runs(empty_database_url)


@pytest.mark.parametrize("k", [1, 6])
def test_migrations_applied_by_the_tool_then_the_rest_printed_and_applied_with_psql(
    empty_database_url, database_url, tmp_path, capsys, k
):
    first = tmp_path / "first"
    first.mkdir()
    for name, text in db.migration_files()[:k]:
        (first / f"{name}.sql").write_text(text)
    chain = db.Chain(
        "queue", first, "migration_bootstrap", "migration_applied", "migration_record",
        "receiptq.migrations",
    )  # fmt: skip
    assert db.migrate(empty_database_url, chain) == ALL[:k]
    rest = printed(capsys, "--url", empty_database_url)
    assert [name for name in ALL if f"-- {name}\n" in rest] == ALL[k:]
    (tmp_path / "rest.sql").write_text(rest)
    psql(empty_database_url, tmp_path / "rest.sql")
    nothing_to_migrate(empty_database_url, capsys)
    assert schema_of(empty_database_url) == schema_of(database_url)
    a_job_runs(empty_database_url)


def test_a_script_applied_twice_stops_at_once_and_changes_nothing(
    empty_database_url, tmp_path, capsys
):
    (tmp_path / "all.sql").write_text(printed(capsys))
    psql(empty_database_url, tmp_path / "all.sql")
    with pytest.raises(AssertionError, match="already exists"):
        psql(empty_database_url, tmp_path / "all.sql")
    nothing_to_migrate(empty_database_url, capsys)


def test_written_files_apply_in_order_and_are_never_overwritten(
    empty_database_url, tmp_path, capsys
):
    folder = tmp_path / "supabase" / "migrations"
    folder.mkdir(parents=True)
    (folder / "20200101000000_app_tables.sql").write_text("CREATE TABLE app_things (id int);\n")
    assert cli.main(["db", "sql", "--write", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == len(ALL)
    files = sorted(p.name for p in folder.iterdir())
    assert files[0] == "20200101000000_app_tables.sql"
    assert [f.split("_", 1)[1] for f in files[1:]] == [f"receiptq_{name}.sql" for name in ALL]
    stamps = [f.split("_", 1)[0] for f in files]
    assert stamps == sorted(set(stamps))  # distinct, in the order they apply

    # Again: nothing changes.
    assert cli.main(["db", "sql", "--write", str(folder)]) == 0
    assert capsys.readouterr().out.count("unchanged ") == len(ALL)
    assert sorted(p.name for p in folder.iterdir()) == files

    # A file edited by hand is refused, and nothing is written.
    edited = folder / files[2]
    edited.write_text(edited.read_text() + "-- edited\n")
    assert cli.main(["db", "sql", "--write", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from receiptq's" in err and files[2] in err
    edited.write_text(edited.read_text().removesuffix("-- edited\n"))

    # A platform's tool runs each file, in name order, each in a transaction.
    for name in files:
        psql(empty_database_url, folder / name, "--single-transaction")
    nothing_to_migrate(empty_database_url, capsys)
    a_job_runs(empty_database_url)


def test_a_later_release_writes_only_its_new_migrations_after_the_others(tmp_path, capsys):
    scratch, folder = tmp_path / "scratch", tmp_path / "migrations"
    assert cli.main(["db", "sql", "--write", str(scratch)]) == 0
    first = min(scratch.iterdir())  # what an earlier release wrote: 0001 only
    folder.mkdir()
    (folder / "29990101000000_receiptq_0001_queue.sql").write_text(first.read_text())
    capsys.readouterr()
    assert cli.main(["db", "sql", "--write", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged ") == 1 and out.count("wrote ") == len(ALL) - 1
    later = sorted(p.name for p in folder.iterdir())[1:]
    assert all(name > "29990101000000" for name in later)


def test_the_receipt_apps_chain_prints_too(empty_database_url, tmp_path, capsys):
    (tmp_path / "queue.sql").write_text(printed(capsys))
    (tmp_path / "receipts.sql").write_text(printed(capsys, "--chain", "receipts"))
    psql(empty_database_url, tmp_path / "queue.sql")
    psql(empty_database_url, tmp_path / "receipts.sql")
    assert cli.main(["receipts", "migrate", "--url", empty_database_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["up_to_date"] is True, out
