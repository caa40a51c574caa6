"""receiptq.enqueue(): jobs sent by the database itself (a trigger, pg_cron)."""

from __future__ import annotations

import json
import time
import uuid

import dramatiq
import pytest
from dramatiq.message import Message
from psycopg import errors, sql

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus
from receiptq.pg.messages import decode_message, encode_message
from receiptq.tiers import TierPolicy


def enqueue(conn, *args, **kwargs):
    """Call receiptq.enqueue with positional and named arguments; the message id."""
    params = [sql.Placeholder()] * len(args) + [
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder()) for name in kwargs
    ]
    statement = sql.SQL("SELECT receiptq.enqueue({}) AS id").format(sql.SQL(", ").join(params))
    row = conn.execute(statement, [*args, *kwargs.values()]).fetchone()
    return row["id"]


def job(conn, message_id: str) -> dict:
    return conn.execute(
        "SELECT queue, actor, priority, tier, user_id, unique_key, max_attempts, message,"
        " extract(epoch FROM run_at - now()) AS due_in_s FROM receiptq.jobs"
        " WHERE message_id = %s",
        (message_id,),
    ).fetchone()


def test_a_trigger_enqueues_a_job_that_a_worker_runs_with_its_arguments(broker, conn):
    conn.execute("CREATE TABLE uploads (id serial PRIMARY KEY, user_id text, total numeric)")
    conn.execute("""
        CREATE FUNCTION enqueue_upload() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM receiptq.enqueue('note_upload', 'uploads', jsonb_build_array(NEW.id),
                                     jsonb_build_object('total', NEW.total),
                                     user_id => NEW.user_id);
            RETURN NULL;
        END $$;
        CREATE TRIGGER uploads_enqueue AFTER INSERT ON uploads
            FOR EACH ROW EXECUTE FUNCTION enqueue_upload();
    """)
    seen: list[tuple] = []

    @dramatiq.actor(queue_name="uploads", max_retries=0)
    def note_upload(upload_id: int, total: float) -> None:
        seen.append((upload_id, total, dramatiq.get_broker() is broker))

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        conn.execute("INSERT INTO uploads (user_id, total) VALUES ('u1', 12.5), ('u2', 7)")
        broker.join("uploads", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert sorted(seen) == [(1, 12.5, True), (2, 7, True)]


def test_the_message_has_the_fields_the_broker_stores(conn):
    message_id = enqueue(
        conn, "ocr_receipt", "ocr", json.dumps([42]),
        kwargs=json.dumps({"lang": "en"}), priority=3, tier="pro", user_id="u-7",
        unique_key="receipt-42",
    )  # fmt: skip
    row = job(conn, message_id)
    stored = row["message"]
    reference = json.loads(
        encode_message(Message("ocr", "ocr_receipt", (42,), {}, {}), max_bytes=10**6)
    )
    assert stored.keys() == reference.keys()
    message = decode_message(json.dumps(stored))
    assert (message.queue_name, message.actor_name, message.args, message.kwargs) == (
        "ocr", "ocr_receipt", (42,), {"lang": "en"},
    )  # fmt: skip
    assert message.options == {
        "priority": 3, "tier": "pro", "user_id": "u-7", "unique_key": "receipt-42",
    }  # fmt: skip
    assert message.message_id == message_id == str(uuid.UUID(message_id))
    assert abs(message.message_timestamp / 1000 - time.time()) < 60
    assert (row["queue"], row["actor"], row["priority"], row["tier"], row["user_id"]) == (
        "ocr", "ocr_receipt", 13, "pro", "u-7",  # pro's offset (10) added, as a send adds it
    )  # fmt: skip
    assert row["unique_key"] == "receipt-42"
    assert row["max_attempts"] == 21  # Dramatiq's default of 20 retries, plus the first run
    assert row["due_in_s"] <= 0


def test_a_delay_schedules_the_job_for_later(conn):
    message_id = enqueue(conn, "report", "default", "[]", delay="10 minutes", max_retries=2)
    row = job(conn, message_id)
    assert 590 < row["due_in_s"] <= 600
    assert row["max_attempts"] == 3


def test_a_duplicate_unique_key_returns_null_and_stores_nothing(conn):
    assert enqueue(conn, "report", "default", "[]", unique_key="daily") is not None
    assert enqueue(conn, "report", "default", "[]", unique_key="daily") is None
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "text"),
    [
        (("a", "bad queue", "[]"), {}, errors.InvalidParameterValue, "invalid queue name"),
        (("a", "ocr.DQ", "[]"), {}, errors.InvalidParameterValue, "invalid queue name"),
        (("a", None, "[]"), {}, errors.InvalidParameterValue, "invalid queue name"),
        (("", "ocr", "[]"), {}, errors.InvalidParameterValue, "actor must be a name"),
        ((None, "ocr", "[]"), {}, errors.InvalidParameterValue, "actor must be a name"),
        (("a", "ocr", '{"id": 1}'), {}, errors.InvalidParameterValue, "args must be a JSON array"),
        (("a", "ocr", None), {}, errors.InvalidParameterValue, "args must be a JSON array"),
        (("a", "ocr", "[]"), {"kwargs": "[1]"}, errors.InvalidParameterValue, "kwargs must be"),
        (("a", "ocr", "[]"), {"delay": "-1 second"}, errors.InvalidParameterValue, "delay"),
        (("a", "ocr", "[]"), {"priority": None}, errors.NullValueNotAllowed, "priority"),
        (("a", "ocr", "[]"), {"tier": ""}, errors.InvalidParameterValue, "1 to 256 characters"),
        (("a", "ocr", "[]"), {"max_retries": -1}, errors.InvalidParameterValue, "max_retries"),
    ],
    ids=[
        "space-in-queue", "delay-queue", "null-queue", "empty-actor", "null-actor",
        "args-object", "null-args", "kwargs-array", "negative-delay", "null-priority",
        "empty-tier", "negative-retries",
    ],
)  # fmt: skip
def test_bad_input_raises_a_clear_error_and_stores_nothing(conn, args, kwargs, error, text):
    with pytest.raises(error, match=text):
        enqueue(conn, *args, **kwargs)
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 0


def test_an_oversized_message_is_refused(conn):
    with pytest.raises(errors.ProgramLimitExceeded, match="over the limit of 1 MiB"):
        enqueue(conn, "a", "ocr", json.dumps(["x" * (1024 * 1024)]))


def test_a_tier_adds_its_priority_offset_as_a_send_from_python_does(broker, conn):
    broker.declare_queue("ocr")
    for tier in ("enterprise", "pro", "free"):
        sent = broker.enqueue(
            Message("ocr", "ocr_receipt", (1,), {}, {"priority": 2, "tier": tier})
        )
        from_sql = enqueue(conn, "ocr_receipt", "ocr", "[1]", priority=2, tier=tier)
        rows = conn.execute(
            "SELECT message_id, priority, (message->'options'->>'priority')::int AS given"
            " FROM receiptq.jobs WHERE message_id IN (%s, %s)",
            (sent.message_id, from_sql),
        ).fetchall()
        assert len(rows) == 2
        assert {r["priority"] for r in rows} == {
            2 + TierPolicy.from_env().get(tier).priority_offset
        }
        assert {r["given"] for r in rows} == {2}


def test_an_unknown_tier_is_refused_naming_the_known_ones(conn):
    with pytest.raises(errors.InvalidParameterValue, match="unknown tier 'gold'.*enterprise, pro"):
        enqueue(conn, "a", "ocr", "[]", tier="gold")
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 0


def test_a_worker_writes_its_tier_policy_which_sql_sends_then_follow(database_url, conn):
    broker = PostgresBroker(database_url, tiers=TierPolicy.parse("gold:4:5,tin:1:50"))
    try:
        broker.declare_queue("ocr")
        broker.consume("ocr", timeout=100).close()  # a consumer starts the heartbeat
        policy = conn.execute(
            "SELECT name, priority_offset, weight FROM receiptq.tiers ORDER BY name"
        ).fetchall()
        assert [tuple(r.values()) for r in policy] == [("gold", 5, 4.0), ("tin", 50, 1.0)]
        message_id = enqueue(conn, "a", "ocr", "[]", priority=1, tier="tin")
        assert job(conn, message_id)["priority"] == 51
        with pytest.raises(errors.InvalidParameterValue, match="unknown tier 'pro'"):
            enqueue(conn, "a", "ocr", "[]", tier="pro")
    finally:
        broker.close()


def test_sql_sends_are_counted_as_enqueued_once_committed_and_never_when_rolled_back(
    database_url, conn
):
    with db.connect(database_url) as sender:
        with sender.transaction():
            for n in range(3):
                enqueue(sender, "report", "default", json.dumps([n]))
            enqueue(sender, "ocr_receipt", "ocr", "[]")
        with pytest.raises(RuntimeError), sender.transaction():
            enqueue(sender, "report", "default", "[9]")
            raise RuntimeError("roll back")
    pool = db.open_pool(database_url, max_size=1)
    beat = Heartbeat(
        lambda: pool, worker_id="h:1:sql", lease_s=600, interval_s=300,
        status=lambda: WorkerStatus([], []),
    )  # fmt: skip
    try:
        beat.beat()  # the first beat ran in the constructor; a second finds nothing more
    finally:
        beat.close()
        pool.close()
    rows = conn.execute(
        "SELECT queue, actor, sum(enqueued)::int AS n FROM receiptq.stats_minute"
        " GROUP BY queue, actor ORDER BY queue"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        ("default", "report", 3),
        ("ocr", "ocr_receipt", 1),
    ]
    assert conn.execute("SELECT count(*) AS n FROM receiptq.sql_sends").fetchone()["n"] == 0
