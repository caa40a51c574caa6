"""Dramatiq's stock middleware on PostgresBroker: Callbacks, Pipelines, AgeLimit,
TimeLimit and CurrentMessage."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import psycopg
from dramatiq.middleware import CurrentMessage, TimeLimit


def dead_letters(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM receiptq.dead_letters ORDER BY id").fetchall()


def test_on_success_callback_receives_the_message_and_the_result(broker, worker):
    received = []

    @dramatiq.actor(queue_name="callbacks")
    def receipt_matched(message_data, result):
        received.append((message_data["message_id"], message_data["args"], result))

    @dramatiq.actor(queue_name="callbacks", on_success="receipt_matched")
    def match_receipt(receipt_id):
        return {"receipt": receipt_id, "matched": True}

    sent = match_receipt.send(42)
    broker.join("callbacks", timeout=10_000)
    worker.join()
    assert received == [(sent.message_id, [42], {"receipt": 42, "matched": True})]


def test_on_failure_callback_receives_the_error(broker, worker):
    received = []

    @dramatiq.actor(queue_name="callbacks")
    def receipt_failed(message_data, error):
        received.append(error)

    @dramatiq.actor(queue_name="callbacks", max_retries=0, on_failure="receipt_failed")
    def match_receipt():
        raise LookupError("no such receipt")

    match_receipt.send()
    broker.join("callbacks", timeout=10_000)
    worker.join()
    assert received == [{"type": "LookupError", "message": "no such receipt"}]


def test_pipeline_feeds_each_result_into_the_next_actor(broker, worker):
    results = []

    @dramatiq.actor(queue_name="pipes")
    def add(x, y):
        return x + y

    @dramatiq.actor(queue_name="pipes")
    def record(total):
        results.append(total)

    dramatiq.pipeline([add.message(1, 2), add.message(10), record.message()]).run()
    broker.join("pipes", timeout=10_000)
    worker.join()
    assert results == [13]


def test_message_past_its_max_age_is_skipped_and_dead_lettered(broker, worker, conn):
    ran = []

    @dramatiq.actor(queue_name="aged", max_age=60_000)
    def ocr_receipt(label):
        ran.append(label)

    stale = ocr_receipt.message("stale").copy(message_timestamp=int(time.time() * 1000) - 120_000)
    broker.enqueue(stale)
    ocr_receipt.send("fresh")
    broker.join("aged", timeout=10_000)
    worker.join()

    assert ran == ["fresh"]
    [dead] = dead_letters(conn)
    assert (dead["message_id"], dead["error_type"]) == (stale.message_id, "SkipMessage")


def test_time_limit_interrupts_a_slow_actor_which_is_retried_then_dead_lettered(
    broker, worker, conn
):
    time_limit = next(m for m in broker.middleware if isinstance(m, TimeLimit))
    time_limit.manager.interval = 0.02
    broker.emit_after("process_boot")  # as the dramatiq CLI does in each worker process
    attempts = []

    @dramatiq.actor(
        queue_name="slow", time_limit=100, max_retries=1, min_backoff=10, max_backoff=20
    )
    def ocr_receipt():
        attempts.append(time.monotonic())
        for _ in range(1000):  # ~10 s unless interrupted
            time.sleep(0.01)

    started = time.monotonic()
    ocr_receipt.send()
    broker.join("slow", timeout=10_000)
    worker.join()

    assert len(attempts) == 2
    assert time.monotonic() - started < 5
    [dead] = dead_letters(conn)
    assert (dead["error_type"], dead["attempts"]) == ("TimeLimitExceeded", 2)


def test_current_message_is_the_delivered_message(broker, worker):
    broker.add_middleware(CurrentMessage())
    seen = []

    @dramatiq.actor(queue_name="current")
    def ocr_receipt():
        message = CurrentMessage.get_current_message()
        seen.append((message.message_id, message.options.get("tier")))

    sent = ocr_receipt.send_with_options(tier="pro")
    broker.join("current", timeout=10_000)
    worker.join()
    assert seen == [(sent.message_id, "pro")]
