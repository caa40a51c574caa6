"""Two migration chains: the queue's (`receiptq db migrate`) creates only the queue's
objects; the receipt app's (`receiptq receipts migrate`) creates its tables in schema
receiptq_app and, on a database migrated by receiptq 0.1 (whose queue chain created
them in schema app), moves them there without touching anything else in app."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dramatiq
import pytest

from receiptq import cli, db
from receiptq.broker import PostgresBroker

#: receiptq 0.1's queue migrations 0001-0006, as shipped (0005 created schema app).
RELEASE_0_1 = Path(__file__).parent.parent / "fixtures" / "migrations_0_1"
APP_TABLES = {"users", "receipts", "bank_transactions", "matches", "emails"}


def migrate_as_0_1(url: str) -> list[str]:
    """Migrate a database the way receiptq 0.1's `receiptq db migrate` did."""
    return db.migrate(url, dataclasses.replace(db.QUEUE_CHAIN, folder=RELEASE_0_1))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tables_of(conn, schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {row["table_name"] for row in rows}


def schema_exists(conn, schema: str) -> bool:
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL AS present", (schema,)).fetchone()
    return bool(row["present"])


def test_db_migrate_creates_only_the_queues_schema_and_says_the_app_chain_is_separate(
    empty_database_url, capsys
):
    code, out, _ = run(capsys, "db", "migrate", "--url", empty_database_url)

    assert code == 0
    lines = out.strip().splitlines()
    assert lines[:-1] == [f"applied {name}" for name, _ in db.migration_files()]
    assert "separate migration chain" in lines[-1] and "receiptq receipts migrate" in lines[-1]
    with db.connect(empty_database_url) as conn:
        assert not schema_exists(conn, "app")
        assert not schema_exists(conn, "receiptq_app")
    code, _, err = run(capsys, "receipts", "list", "--url", empty_database_url)
    assert code == 1 and err == (
        f"receiptq: error: the database at {db.describe_database(empty_database_url)} has no "
        "receipt app tables: run `receiptq receipts migrate`\n"
    )


def test_db_migrate_leaves_a_databases_own_app_users_alone(empty_database_url, capsys):
    with db.connect(empty_database_url) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.users (login text PRIMARY KEY, plan text)")
        conn.execute("INSERT INTO app.users VALUES ('ana', 'gold')")

    code, _, err = run(capsys, "db", "migrate", "--url", empty_database_url)
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "db", "migrate", "--json", "--url", empty_database_url)
    assert code == 0 and json.loads(out)["up_to_date"] is True

    with db.connect(empty_database_url) as conn:
        assert tables_of(conn, "app") == {"users"}
        assert conn.execute("SELECT * FROM app.users").fetchall() == [
            {"login": "ana", "plan": "gold"}
        ]
        assert not schema_exists(conn, "receiptq_app")


def test_receipts_migrate_applies_both_chains_each_with_its_own_record(empty_database_url, capsys):
    code, out, _ = run(capsys, "receipts", "migrate", "--json", "--url", empty_database_url)

    assert code == 0
    applied = json.loads(out)
    assert applied["queue"] == [name for name, _ in db.migration_files()]
    assert applied["receipts"] == ["0001_receipts_schema"]
    with db.connect(empty_database_url) as conn:
        assert tables_of(conn, "receiptq_app") == APP_TABLES | {"migrations"}
        assert not schema_exists(conn, "app")
        recorded = {r["name"] for r in conn.execute("SELECT name FROM receiptq.migrations")}
        assert "0001_receipts_schema" not in recorded
    assert db.applied_migrations(empty_database_url, db.RECEIPTS_CHAIN) == ["0001_receipts_schema"]
    code, out, _ = run(capsys, "receipts", "migrate", "--url", empty_database_url)
    assert (code, out.strip()) == (0, "up to date")


def seed_0_1(url: str) -> dict[str, int]:
    """A user, a receipt of theirs and its queued OCR job, and a job of another actor,
    written as receiptq 0.1 wrote them."""
    with db.connect(url) as conn:
        user = conn.execute(
            "INSERT INTO app.users (email, tier) VALUES ('ana@example.test', 'pro') RETURNING id"
        ).fetchone()["id"]
        receipt = conn.execute(
            "INSERT INTO app.receipts (user_id, image) VALUES (%s, 'png') RETURNING id", (user,)
        ).fetchone()["id"]
        conn.execute(
            "SELECT receiptq.enqueue('ocr_receipt', 'ocr', jsonb_build_array(%s::bigint))",
            (receipt,),
        )
        conn.execute("SELECT receiptq.enqueue('upgrade_probe', 'default', '[7]')")
    return {"user": user, "receipt": receipt}


@pytest.mark.timeout(60)
def test_upgrade_from_0_1_keeps_the_data_and_the_broker_and_the_receipts_cli_see_it(
    empty_database_url, capsys, monkeypatch
):
    url = empty_database_url
    assert "0005_receipts_app" in migrate_as_0_1(url)
    seeded = seed_0_1(url)
    monkeypatch.setenv("COLUMNS", "250")

    code, out, _ = run(capsys, "db", "migrate", "--url", url)
    assert code == 0
    assert "moves them to schema receiptq_app" in out  # the 0.1 tables, and what to do
    code, out, _ = run(capsys, "receipts", "migrate", "--json", "--url", url)
    assert code == 0 and json.loads(out)["receipts"] == ["0001_receipts_schema"]

    with db.connect(url) as conn:
        assert not schema_exists(conn, "app")  # created by 0.1's 0005, empty now: dropped
        assert tables_of(conn, "receiptq_app") == APP_TABLES | {"migrations"}
        # The identity sequences moved with their tables: new ids follow the old ones.
        new_user = conn.execute(
            "INSERT INTO receiptq_app.users (email) VALUES ('bo@example.test') RETURNING id"
        ).fetchone()["id"]
        assert new_user > seeded["user"]
        jobs = {r["actor"] for r in conn.execute("SELECT actor FROM receiptq.jobs")}
        assert jobs == {"ocr_receipt", "upgrade_probe"}

    code, out, _ = run(capsys, "receipts", "list", "--json", "--url", url)
    assert code == 0
    (listed,) = json.loads(out)["receipts"]
    assert (listed["id"], listed["email"], listed["status"]) == (
        seeded["receipt"], "ana@example.test", "uploaded",
    )  # fmt: skip
    assert listed["stuck"] is None  # its OCR job is still queued
    code, out, _ = run(capsys, "db", "migrate", "--url", url)
    assert "moves them" not in out

    broker = PostgresBroker(url, poll_interval_ms=100)
    seen: list[int] = []
    dramatiq.actor(seen.append, actor_name="upgrade_probe", broker=broker)
    worker = dramatiq.Worker(broker, queues={"default"}, worker_threads=1)
    worker.start()
    try:
        broker.join("default", timeout=20_000)
    finally:
        worker.stop()
        broker.close()
    assert seen == [7]


def test_upgrade_moves_only_what_0_1_created_and_keeps_a_schema_app_it_did_not_create(
    empty_database_url, capsys
):
    url = empty_database_url
    with db.connect(url) as conn:  # the app's own schema app, before receiptq came
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO app.orders VALUES (1)")
    migrate_as_0_1(url)
    seed_0_1(url)
    with db.connect(url) as conn:
        conn.execute("DROP TABLE app.orders")  # now empty but for 0.1's tables

    code, _, _ = run(capsys, "receipts", "migrate", "--url", url)

    assert code == 0
    with db.connect(url) as conn:
        assert schema_exists(conn, "app")  # not created by receiptq: kept, though empty
        assert tables_of(conn, "app") == set()
        assert tables_of(conn, "receiptq_app") == APP_TABLES | {"migrations"}
        users = conn.execute("SELECT email FROM receiptq_app.users").fetchall()
        assert users == [{"email": "ana@example.test"}]


def test_upgrade_leaves_other_objects_in_schema_app_where_they_are(empty_database_url, capsys):
    url = empty_database_url
    migrate_as_0_1(url)
    seed_0_1(url)
    with db.connect(url) as conn:  # the app added its own table next to 0.1's
        conn.execute("CREATE TABLE app.orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO app.orders VALUES (1)")

    assert run(capsys, "receipts", "migrate", "--url", url)[0] == 0

    with db.connect(url) as conn:
        assert tables_of(conn, "app") == {"orders"}
        assert conn.execute("SELECT id FROM app.orders").fetchall() == [{"id": 1}]
        assert APP_TABLES <= tables_of(conn, "receiptq_app")


def test_receipts_migrate_never_takes_an_app_users_that_receiptq_did_not_create(
    empty_database_url, capsys
):
    url = empty_database_url
    with db.connect(url) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.users (login text PRIMARY KEY)")

    assert run(capsys, "receipts", "migrate", "--url", url)[0] == 0

    with db.connect(url) as conn:
        assert tables_of(conn, "app") == {"users"}
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'app' AND table_name = 'users'"
        ).fetchall()
        assert columns == [{"column_name": "login"}]
        assert APP_TABLES <= tables_of(conn, "receiptq_app")
