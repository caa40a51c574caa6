"""Bulk sends (``PostgresBroker.enqueue_many``): a plain bulk send streams into a
COPY, every other batch goes through ``job_enqueue_many``; both must store the
same rows, store nothing when one message is bad and drop stored message ids.
That a bulk send wakes consumers once per queue: test_broker.py."""

from __future__ import annotations

from typing import Any

import dramatiq
import psycopg
import pytest

from receiptq.broker import MessageError, PostgresBroker

#: Columns a send decides (the rest are ids and times).
COLUMNS = ("queue", "actor", "priority", "state", "attempt", "max_attempts", "tier", "user_round")


def jobs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM receiptq.jobs ORDER BY id").fetchall()


def test_a_bulk_send_stores_the_row_a_single_send_stores(broker: PostgresBroker, conn):
    @dramatiq.actor(queue_name="ocr", priority=3, max_retries=4)
    def ocr_receipt(receipt_id):
        pass

    single = ocr_receipt.send_with_options(args=(1,), tier="pro")
    bulk = ocr_receipt.message_with_options(args=(2,), tier="pro")
    assert broker.enqueue_many([bulk]) == 1

    first, second = jobs(conn)
    assert {c: first[c] for c in COLUMNS} == {c: second[c] for c in COLUMNS}
    assert second["priority"] == 13  # the actor's 3 and tier pro's offset
    assert second["max_attempts"] == 5
    # Due at once, by the server's clock, as a single send's job.
    assert second["run_at"] == second["enqueued_at"]
    assert first["run_at"] == first["enqueued_at"]
    assert first["message"]["message_id"] == single.message_id
    assert second["message"]["message_id"] == bulk.message_id == second["message_id"]
    assert second["message"]["options"] == {"tier": "pro"}


def test_a_bad_message_late_in_a_big_bulk_send_stores_nothing(broker: PostgresBroker, conn):
    @dramatiq.actor(queue_name="bulk")
    def collect(value):
        pass

    messages = [collect.message(n) for n in range(3000)]
    messages[2500] = collect.message(object())
    with pytest.raises(MessageError, match="not JSON-serializable"):
        broker.enqueue_many(messages)
    assert jobs(conn) == []
    # The broker's connection is fine afterwards.
    assert broker.enqueue_many(messages[:10]) == 10


def test_a_failed_bulk_send_leaves_the_callers_transaction_usable(
    broker: PostgresBroker, conn, database_url
):
    @dramatiq.actor(queue_name="bulk")
    def collect(value):
        pass

    conn.execute("CREATE TABLE receipts (id integer PRIMARY KEY)")
    bad = [collect.message(n) for n in range(500)] + [collect.message(float("nan"))]
    with psycopg.connect(database_url) as caller:
        with caller.transaction(), broker.transaction(caller):
            caller.execute("INSERT INTO receipts VALUES (1)")
            with pytest.raises(MessageError):
                broker.enqueue_many(bad)
            assert broker.enqueue_many([collect.message(n) for n in range(5)]) == 5
            caller.execute("INSERT INTO receipts VALUES (2)")

    assert [r["message"]["args"] for r in jobs(conn)] == [[n] for n in range(5)]
    assert conn.execute("SELECT count(*) AS n FROM receipts").fetchone()["n"] == 2


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_bulk_send_repeating_a_stored_message_stores_only_the_new_ones(
    broker: PostgresBroker, conn, database_url, in_transaction
):
    @dramatiq.actor(queue_name="bulk")
    def collect(value):
        pass

    stored = collect.send(0)
    again = [stored, *(collect.message(n) for n in range(1, 200))]
    if in_transaction:
        with psycopg.connect(database_url) as caller:
            with caller.transaction(), broker.transaction(caller):
                assert broker.enqueue_many(again) == 199
    else:
        assert broker.enqueue_many(again) == 199
    rows = jobs(conn)
    assert [r["message"]["args"][0] for r in rows] == list(range(200))
    assert len({r["message_id"] for r in rows}) == 200


def test_a_batch_with_a_delay_or_a_user_stores_every_job(broker: PostgresBroker, conn):
    @dramatiq.actor(queue_name="bulk")
    def collect(value):
        pass

    assert broker.enqueue_many([collect.message(n) for n in range(3)], delay=60_000) == 3
    later = [collect.message(3), collect.message_with_options(args=(4,), user_id="u1")]
    assert broker.enqueue_many(later) == 2
    rows = jobs(conn)
    assert [r["message"]["args"][0] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["run_at"] > r["enqueued_at"] for r in rows[:3])
    assert rows[3]["run_at"] == rows[3]["enqueued_at"]
    assert rows[4]["user_id"] == "u1" and rows[4]["user_round"] == 1


def test_a_bulk_send_with_users_gets_the_rounds_either_statement_gives(
    broker: PostgresBroker, conn
):
    """The COPY of a batch with users takes its rounds from job_user_round_bases, a
    batch with a unique key goes through job_enqueue_many: the same rounds, as the
    row trigger of a single send gives them one after the other."""

    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(value):
        pass

    def batch(key: str | None) -> list[Any]:
        users = ["ann", "bob", "ann", None, "cy", "ann", "bob"]
        messages = [
            ocr_receipt.message_with_options(args=(n,), **({"user_id": u} if u else {}))
            for n, u in enumerate(users)
        ]
        if key is not None:
            messages.append(ocr_receipt.message_with_options(args=(99,), unique_key=key))
        return messages

    def rounds_after(key: str | None) -> list[tuple[str | None, int]]:
        conn.execute("DELETE FROM receiptq.jobs")
        for n in range(3):  # ann has rounds 1-3 already, bob 1
            ocr_receipt.send_with_options(args=(n,), user_id="ann")
        ocr_receipt.send_with_options(args=(0,), user_id="bob")
        assert broker.enqueue_many(batch(key)) == 7 + (key is not None)
        rows = conn.execute(
            "SELECT user_id, user_round FROM receiptq.jobs WHERE unique_key IS NULL ORDER BY id"
        ).fetchall()
        return [(r["user_id"], r["user_round"]) for r in rows[4:]]

    copied, inserted = rounds_after(None), rounds_after("k")
    assert copied == inserted == [
        ("ann", 4), ("bob", 2), ("ann", 5), (None, 0), ("cy", 1), ("ann", 6), ("bob", 3),
    ]  # fmt: skip
