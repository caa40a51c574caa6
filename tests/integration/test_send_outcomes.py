"""What a send tells its caller: a dropped duplicate is visible, and statistics count a
send made inside the caller's transaction only once that transaction commits."""

from __future__ import annotations

import dramatiq
import psycopg

from receiptq.broker import DUPLICATE_OPTION


def enqueued(conn, queue: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(enqueued), 0)::int AS n FROM receiptq.stats_minute WHERE queue = %s",
        (queue,),
    ).fetchone()
    return row["n"]


def test_a_duplicate_unique_key_send_returns_a_message_marked_duplicate(broker, conn):
    @dramatiq.actor(queue_name="matching")
    def match_receipt(receipt_id):
        pass

    first = match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    again = match_receipt.send_with_options(args=(1,), unique_key="receipt-1")

    assert DUPLICATE_OPTION not in first.options
    assert again.options[DUPLICATE_OPTION] is True
    stored = conn.execute("SELECT message_id FROM receiptq.jobs").fetchall()
    assert stored == [{"message_id": first.message_id}]


def test_enqueue_many_counts_only_what_it_stored(broker):
    @dramatiq.actor(queue_name="matching")
    def match_receipt(receipt_id):
        pass

    messages = [match_receipt.message_with_options(args=(n,), unique_key="same") for n in range(3)]
    assert broker.enqueue_many(messages) == 1


def test_a_send_rolled_back_with_the_callers_transaction_is_not_counted(broker, database_url, conn):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(receipt_id):
        pass

    with psycopg.connect(database_url) as own:
        with own.transaction() as tx, broker.transaction(own):
            ocr_receipt.send(1)
            broker.enqueue_many([ocr_receipt.message(2), ocr_receipt.message(3)])
            raise psycopg.Rollback(tx)
        with own.transaction(), broker.transaction(own):
            ocr_receipt.send(4)
            broker.enqueue_many([ocr_receipt.message(5)])
    broker.close()  # writes the statistics still held

    assert conn.execute("SELECT count(*)::int AS n FROM receiptq.jobs").fetchone()["n"] == 2
    assert enqueued(conn, "ocr") == 2


def test_a_send_in_a_transaction_still_open_is_counted_once_it_commits(broker, database_url, conn):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(receipt_id):
        pass

    with psycopg.connect(database_url) as own:
        with own.transaction(), broker.transaction(own):
            ocr_receipt.send(1)
            broker._flusher._write_stats()  # a statistics write while it is open
            assert enqueued(conn, "ocr") == 0
        broker.close()
    assert enqueued(conn, "ocr") == 1
