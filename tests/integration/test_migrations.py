"""Migrations: applied in order to an empty database, recorded once, safe to race."""

from __future__ import annotations

import re
import threading

from receiptq import db

CORE_TABLES = {"jobs", "dead_letters", "stats_minute", "workers", "migrations"}
CORE_INDEXES = {"jobs_claim_idx", "jobs_lease_idx", "jobs_unique_key_idx"}
CORE_FUNCTIONS = {"hist_add", "notify_inserted_jobs", "notify_requeued_job"}


def declared(kind: str) -> set[str]:
    """Names of the objects of one kind (TABLE, INDEX, FUNCTION, TRIGGER) the migrations create."""
    pattern = re.compile(
        rf"CREATE\s+(?:UNIQUE\s+)?(?:OR\s+REPLACE\s+)?{kind}\s+(?:IF\s+NOT\s+EXISTS\s+)?"
        r"(?:receiptq\.)?(\w+)\b(?!\.)",  # objects of schema receiptq
        re.IGNORECASE,
    )
    return {name for _, sql in db.migration_files() for name in pattern.findall(sql)}


def test_migration_files_declare_the_core_schema():
    assert CORE_TABLES - {"migrations"} <= declared("TABLE")
    assert CORE_INDEXES <= declared("INDEX")
    assert CORE_FUNCTIONS <= declared("FUNCTION")
    assert {"jobs_notify_insert", "jobs_notify_requeue"} <= declared("TRIGGER")


def test_migrate_creates_every_declared_object_on_an_empty_database(empty_database_url):
    applied = db.migrate(empty_database_url)

    assert applied == [name for name, _ in db.migration_files()]
    assert applied[0] == "0001_queue"
    with db.connect(empty_database_url) as conn:
        tables = {
            r["table_name"]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'receiptq'"
            )
        }
        indexes = {
            r["indexname"]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'receiptq'")
        }
        functions = {
            r["routine_name"]
            for r in conn.execute(
                "SELECT routine_name FROM information_schema.routines"
                " WHERE routine_schema = 'receiptq'"
            )
        }
        triggers = {
            r["trigger_name"]
            for r in conn.execute(
                "SELECT trigger_name FROM information_schema.triggers"
                " WHERE event_object_schema = 'receiptq'"
            )
        }
        recorded = [r["name"] for r in conn.execute("SELECT name FROM receiptq.migrations")]
    assert declared("TABLE") | {"migrations"} <= tables
    assert CORE_TABLES <= tables
    assert declared("INDEX") <= indexes
    assert CORE_INDEXES <= indexes
    assert declared("FUNCTION") <= functions
    assert declared("TRIGGER") <= triggers
    assert sorted(recorded) == applied


def test_claim_index_is_partial_on_queued_rows(empty_database_url):
    db.migrate(empty_database_url)
    with db.connect(empty_database_url) as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_claim_idx'"
        ).fetchone()
    assert row is not None
    assert "(queue, COALESCE(tier, ''::text), priority, user_round, run_at, id)" in row["indexdef"]
    assert "WHERE (state = 'queued'::text)" in row["indexdef"]


def test_second_migrate_applies_nothing(empty_database_url):
    first = db.migrate(empty_database_url)
    assert first
    assert db.migrate(empty_database_url) == []
    assert db.applied_migrations(empty_database_url) == first


def test_applied_migrations_of_an_empty_database_is_empty(empty_database_url):
    assert db.applied_migrations(empty_database_url) == []


def test_concurrent_migrations_both_succeed_and_apply_each_file_once(empty_database_url):
    barrier = threading.Barrier(3)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(10)
            results[n] = db.migrate(empty_database_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(results) == 3
    everything = [name for name, _ in db.migration_files()]
    applied = [name for names in results.values() for name in names]
    assert sorted(applied) == everything  # each file applied by exactly one thread
    with db.connect(empty_database_url) as conn:
        counts = conn.execute(
            "SELECT name, count(*) AS n FROM receiptq.migrations GROUP BY name"
        ).fetchall()
    assert {r["name"]: r["n"] for r in counts} == dict.fromkeys(everything, 1)


def test_hist_add_sums_histograms_of_any_lengths(conn):
    row = conn.execute(
        "SELECT receiptq.hist_add('{1,2,3}', '{10,20}') AS a,"
        " receiptq.hist_add('{}', '{4}') AS b, receiptq.hist_add('{}', '{}') AS c"
    ).fetchone()
    assert row == {"a": [11, 22, 3], "b": [4], "c": []}
