"""PostgresBroker: enqueue, claim, ack, order, delays, bulk and transactional sends, bad input.

Failures, leases and shutdown are in test_broker_failures.py; Dramatiq's stock
middleware in test_broker_middleware.py; statistics in test_broker_stats.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from receiptq import db
from receiptq.broker import MessageError, PostgresBroker


def job_rows(conn: psycopg.Connection[Any], queue: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM receiptq.jobs WHERE %(queue)s::text IS NULL OR queue = %(queue)s"
        " ORDER BY id",
        {"queue": queue},
    ).fetchall()


def start_worker(broker: PostgresBroker, threads: int = 4) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


# -- enqueue, claim, ack ---------------------------------------------------------------


def test_job_runs_and_leaves_the_table(broker, worker, conn):
    seen = []

    @dramatiq.actor(queue_name="smoke")
    def remember(value):
        seen.append(value)

    remember.send(7)
    broker.join("smoke", timeout=10_000)
    worker.join()
    assert seen == [7]
    assert db.fetch_one(conn, "job_count_unfinished", {"queue": "smoke"})["jobs"] == 0


def test_sent_job_is_stored_queued_with_its_columns(broker, conn):
    @dramatiq.actor(queue_name="ocr", priority=7, max_retries=3)
    def ocr_receipt(receipt_id):
        pass

    message = ocr_receipt.send_with_options(args=(42,), tier="pro", user_id=9)

    [row] = job_rows(conn)
    assert row["message_id"] == message.message_id
    assert (row["queue"], row["actor"], row["state"]) == ("ocr", "ocr_receipt", "queued")
    # The actor's priority 7 plus the default policy's offset for "pro" (10).
    assert (row["priority"], row["attempt"], row["max_attempts"]) == (17, 0, 4)
    assert (row["tier"], row["user_id"], row["lease_owner"]) == ("pro", "9", None)
    assert row["message"]["args"] == [42]
    assert row["run_at"] <= conn.execute("SELECT now() AS now").fetchone()["now"]


def test_claimed_job_is_running_under_a_lease_and_ack_deletes_it(broker, conn):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(receipt_id):
        pass

    sent = ocr_receipt.send(42)
    consumer = broker.consume("ocr", prefetch=4, timeout=1000)
    try:
        message = next(consumer)
        assert message is not None
        assert (message.message_id, message.args) == (sent.message_id, (42,))

        [row] = job_rows(conn)
        assert (row["state"], row["attempt"], row["lease_owner"]) == (
            "running",
            1,
            broker.worker_id,
        )
        lease_s = conn.execute(
            "SELECT extract(epoch FROM lease_expires_at - now())::float8 AS s FROM receiptq.jobs"
        ).fetchone()["s"]
        assert 3 < lease_s <= 5  # the fixture's lease_s=5

        consumer.ack(message)
        assert broker.wait_for_acks(5)
        assert job_rows(conn) == []
    finally:
        consumer.close()


def test_consumer_returns_none_when_nothing_is_ready(broker):
    broker.declare_queue("idle")
    consumer = broker.consume("idle", prefetch=2, timeout=200)
    try:
        started = time.monotonic()
        assert next(consumer) is None
        assert time.monotonic() - started < 2
    finally:
        consumer.close()


def test_consume_of_an_undeclared_queue_raises_queue_not_found(broker):
    with pytest.raises(QueueNotFound):
        broker.consume("never-declared")


# -- order and time ----------------------------------------------------------------------


def test_jobs_run_in_priority_order_lowest_first_then_in_send_order(broker, conn):
    ran = []

    @dramatiq.actor(queue_name="prio")
    def record(label):
        ran.append(label)

    for label, priority in [("p5", 5), ("p1-a", 1), ("p3", 3), ("p0", 0), ("p1-b", 1), ("p2", 2)]:
        record.send_with_options(args=(label,), priority=priority)

    worker = start_worker(broker, threads=1)
    try:
        broker.join("prio", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert ran == ["p0", "p1-a", "p1-b", "p2", "p3", "p5"]


def test_delayed_job_is_not_run_before_its_time_and_runs_soon_after(broker, worker, conn):
    ran_at = []

    @dramatiq.actor(queue_name="later")
    def stamp():
        ran_at.append(time.time())

    sent_at = time.time()
    stamp.send_with_options(delay=1500)
    [row] = job_rows(conn)
    assert 1.49 < (row["run_at"] - row["enqueued_at"]).total_seconds() < 1.51

    broker.join("later", timeout=10_000)
    worker.join()
    assert len(ran_at) == 1
    waited = ran_at[0] - sent_at
    assert waited >= 1.5 - 0.005, "delivered before its run_at"
    assert waited < 2.5, "delivered more than 1 s late"


def test_message_for_a_delay_queue_with_an_eta_runs_on_its_queue(broker, worker, conn):
    ran_at = []

    @dramatiq.actor(queue_name="later")
    def stamp():
        ran_at.append(time.time())

    eta_ms = int(time.time() * 1000) + 300
    message = stamp.message().copy(queue_name="later.DQ", options={"eta": eta_ms})
    broker.enqueue(message)
    [row] = job_rows(conn)
    assert row["queue"] == "later"
    assert row["message"]["queue_name"] == "later"
    assert "eta" not in row["message"]["options"]

    broker.join("later", timeout=10_000)
    worker.join()
    assert len(ran_at) == 1
    assert ran_at[0] >= eta_ms / 1000 - 0.005


# -- bulk, transactional and unique sends --------------------------------------------------


def test_enqueue_many_stores_every_job_in_one_call_and_they_all_run(broker, conn):
    seen = []

    @dramatiq.actor(queue_name="bulk")
    def collect(n):
        seen.append(n)

    stored = broker.enqueue_many([collect.message(n) for n in range(50)])
    assert stored == 50
    assert len(job_rows(conn, "bulk")) == 50

    worker = start_worker(broker)
    try:
        broker.join("bulk", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert sorted(seen) == list(range(50))


def test_enqueue_many_of_nothing_stores_nothing(broker, conn):
    assert broker.enqueue_many([]) == 0
    assert job_rows(conn) == []


def test_rolled_back_transactional_enqueue_leaves_no_job(broker, conn, database_url):
    @dramatiq.actor(queue_name="tx")
    def process_receipt(receipt_id):
        pass

    conn.execute("CREATE TABLE receipts (id integer PRIMARY KEY)")
    with psycopg.connect(database_url) as caller:
        with pytest.raises(RuntimeError, match="upload failed"):
            with caller.transaction(), broker.transaction(caller):
                caller.execute("INSERT INTO receipts VALUES (1)")
                process_receipt.send(1)
                assert job_rows(conn) == []  # not visible before the commit either
                raise RuntimeError("upload failed")

    assert job_rows(conn) == []
    assert conn.execute("SELECT count(*) AS n FROM receipts").fetchone()["n"] == 0


def test_committed_transactional_enqueue_stores_the_job_with_the_callers_rows(
    broker, conn, database_url
):
    @dramatiq.actor(queue_name="tx")
    def process_receipt(receipt_id):
        pass

    conn.execute("CREATE TABLE receipts (id integer PRIMARY KEY)")
    with psycopg.connect(database_url) as caller:
        with caller.transaction(), broker.transaction(caller):
            caller.execute("INSERT INTO receipts VALUES (1)")
            process_receipt.send(1)
            broker.enqueue_many([process_receipt.message(2), process_receipt.message(3)])

    assert [r["message"]["args"] for r in job_rows(conn)] == [[1], [2], [3]]
    assert conn.execute("SELECT count(*) AS n FROM receipts").fetchone()["n"] == 1
    # Outside the block, sends use the pool again and commit at once.
    process_receipt.send(4)
    assert len(job_rows(conn)) == 4


def test_duplicate_unique_key_is_dropped_while_the_first_is_queued_or_running(broker, conn):
    @dramatiq.actor(queue_name="uniq")
    def match_receipt(receipt_id):
        pass

    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    match_receipt.send_with_options(args=(2,), unique_key="receipt-2")
    assert [r["unique_key"] for r in job_rows(conn)] == ["receipt-1", "receipt-2"]

    consumer = broker.consume("uniq", prefetch=1, timeout=1000)
    try:
        assert next(consumer) is not None  # receipt-1 is running now
        match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
        stored = broker.enqueue_many(
            [match_receipt.message_with_options(args=(1,), unique_key="receipt-1")]
        )
        assert stored == 0
        assert len(job_rows(conn)) == 2
    finally:
        consumer.close()


def test_unique_key_is_accepted_again_after_the_first_job_finished(broker, worker, conn):
    ran = []

    @dramatiq.actor(queue_name="uniq")
    def match_receipt(receipt_id):
        ran.append(receipt_id)

    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    broker.join("uniq", timeout=10_000)
    worker.join()
    match_receipt.send_with_options(args=(2,), unique_key="receipt-1")
    broker.join("uniq", timeout=10_000)
    worker.join()
    assert ran == [1, 2]


# -- housekeeping ------------------------------------------------------------------------


def test_flush_empties_one_queue_and_flush_all_every_queue(broker, conn):
    @dramatiq.actor(queue_name="first")
    def one():
        pass

    @dramatiq.actor(queue_name="second")
    def two():
        pass

    for _ in range(3):
        one.send()
        two.send()
    two.send_with_options(delay=60_000)

    broker.flush("first")
    assert job_rows(conn, "first") == []
    assert len(job_rows(conn, "second")) == 4

    broker.flush_all()
    assert job_rows(conn) == []


def test_flush_of_an_undeclared_queue_raises_queue_not_found(broker):
    with pytest.raises(QueueNotFound):
        broker.flush("never-declared")


def test_join_raises_queue_join_timeout_while_work_remains(broker):
    @dramatiq.actor(queue_name="stuck")
    def nobody_runs_me():
        pass

    nobody_runs_me.send()
    started = time.monotonic()
    with pytest.raises(QueueJoinTimeout):
        broker.join("stuck", timeout=300)
    assert 0.3 <= time.monotonic() - started < 3


def test_join_counts_scheduled_jobs_as_unfinished(broker):
    @dramatiq.actor(queue_name="stuck")
    def later():
        pass

    later.send_with_options(delay=60_000)
    with pytest.raises(QueueJoinTimeout):
        broker.join("stuck", timeout=200)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("arg", [object(), {1, 2}, b"raw", float("nan")])
def test_non_json_arguments_are_refused_and_nothing_is_written(broker, conn, arg):
    @dramatiq.actor(queue_name="bad")
    def ocr_receipt(value):
        pass

    with pytest.raises(MessageError, match="not JSON-serializable"):
        ocr_receipt.send(arg)
    with pytest.raises(MessageError, match="not JSON-serializable"):
        broker.enqueue_many([ocr_receipt.message(1), ocr_receipt.message(arg)])
    assert job_rows(conn) == []


def test_arguments_over_the_size_limit_are_refused_and_nothing_is_written(broker, conn):
    @dramatiq.actor(queue_name="bad")
    def ocr_receipt(image):
        pass

    with pytest.raises(MessageError, match=r"over the limit of 1048576 bytes"):
        ocr_receipt.send("x" * (1024 * 1024))
    assert job_rows(conn) == []


def test_size_limit_is_configurable(database_url, conn):
    small = PostgresBroker(database_url, max_message_bytes=500)
    try:
        small.declare_queue("bad")
        message = Message(
            queue_name="bad", actor_name="ocr_receipt", args=("x" * 600,), kwargs={}, options={}
        )
        with pytest.raises(MessageError, match="over the limit of 500 bytes"):
            small.enqueue(message)
        small.enqueue(message.copy(args=("x" * 10,)))
    finally:
        small.close()
    assert len(job_rows(conn)) == 1


def test_nul_character_in_arguments_is_refused_before_reaching_postgres(broker, conn):
    @dramatiq.actor(queue_name="bad")
    def ocr_receipt(text):
        pass

    with pytest.raises(MessageError, match="NUL"):
        ocr_receipt.send("total\x00")
    assert job_rows(conn) == []


def test_bad_option_types_are_refused(broker, conn):
    @dramatiq.actor(queue_name="bad")
    def ocr_receipt():
        pass

    with pytest.raises(MessageError, match="'priority' must be an integer"):
        ocr_receipt.send_with_options(priority="urgent")
    with pytest.raises(MessageError, match="'tier' must be a string"):
        ocr_receipt.send_with_options(tier=["pro"])
    with pytest.raises(MessageError, match="delay must be"):
        ocr_receipt.send_with_options(delay=-5)
    assert job_rows(conn) == []


HOSTILE_QUEUE_NAMES = [
    "x; DROP TABLE receiptq.jobs",
    "",
    "a" * 300,
    "../etc",
    ".DQ",
    "ocr.DQ.DQ",
    "ocr.XQ.DQ",
]


@pytest.mark.parametrize("name", HOSTILE_QUEUE_NAMES)
def test_hostile_queue_names_are_refused_by_declare_queue(broker, conn, name):
    with pytest.raises(ValueError, match="queue name"):
        broker.declare_queue(name)
    assert name not in broker.queues
    assert job_rows(conn) == []  # the table is still there


@pytest.mark.parametrize("name", HOSTILE_QUEUE_NAMES)
def test_hostile_queue_names_are_refused_by_actor_declaration(broker, name):
    def ocr_receipt():
        pass

    with pytest.raises(ValueError, match="[Qq]ueue name"):
        dramatiq.actor(queue_name=name)(ocr_receipt)
    assert name not in broker.queues
    assert "ocr_receipt" not in broker.actors


@pytest.mark.parametrize("name", ["receipts.DQ", "receipts.XQ"])
def test_a_delay_or_dead_letter_queue_name_declares_its_queue_as_in_dramatiq(broker, name):
    declared = []

    class Spy(Middleware):
        def after_declare_queue(self, broker, queue_name):
            declared.append(queue_name)

    broker.add_middleware(Spy())
    broker.declare_queue(name)
    broker.declare_queue("receipts")
    assert declared == ["receipts"]
    assert "receipts" in broker.queues
    assert name not in broker.queues
    assert "receipts.DQ" in broker.delay_queues


def test_a_worker_restricted_to_other_queues_starts_no_consumer_for_a_declared_queue(broker):
    # Dramatiq's test_workers_dont_register_queues_that_arent_whitelisted, on receiptq.
    worker = dramatiq.Worker(broker, queues={"a", "b"}, worker_timeout=100)
    worker.start()
    try:
        broker.declare_queue("c")
        broker.declare_queue("c.DQ")
        assert "c" not in worker.consumers
        assert "c.DQ" not in worker.consumers
    finally:
        worker.stop()


def test_an_actor_on_a_delay_queue_name_runs_on_its_queue(broker, worker, conn):
    ran = []

    @dramatiq.actor(queue_name="stamps.DQ")
    def stamp():
        ran.append(1)

    stamp.send()
    assert [row["queue"] for row in job_rows(conn)] == ["stamps"]
    broker.join("stamps", timeout=10_000)
    worker.join()
    assert ran == [1]


def test_message_to_an_undeclared_queue_is_refused(broker, conn):
    message = Message(queue_name="nowhere", actor_name="a", args=(), kwargs={}, options={})
    with pytest.raises(QueueNotFound):
        broker.enqueue(message)
    with pytest.raises(QueueNotFound):
        broker.enqueue_many([message])
    assert job_rows(conn) == []


# -- wake-ups and connections --------------------------------------------------------------


def other_backends(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The other connections to the test's database."""
    return conn.execute(
        "SELECT pid, query FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()


def wait_for_listener(conn: psycopg.Connection[Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(b["query"] == "LISTEN receiptq" for b in other_backends(conn)):
        assert time.monotonic() < deadline, "the listener never connected"
        time.sleep(0.01)


def test_one_notification_per_enqueue_transaction_and_queue(broker, conn, database_url):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(n):
        pass

    @dramatiq.actor(queue_name="email")
    def send_email(n):
        pass

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN receiptq")
        broker.enqueue_many([ocr_receipt.message(n) for n in range(20)] + [send_email.message(1)])
        with psycopg.connect(database_url) as caller:
            with caller.transaction(), broker.transaction(caller):
                for n in range(5):
                    ocr_receipt.send(n)
        payloads = [notify.payload for notify in listener.notifies(timeout=0.5)]
    assert sorted(payloads) == ["email", "ocr", "ocr"]


def test_idle_consumer_is_woken_by_a_notification_long_before_its_next_poll(database_url, conn):
    broker = PostgresBroker(database_url, poll_interval_ms=30_000)
    try:
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="wake")
        def ocr_receipt():
            pass

        consumer = broker.consume("wake", prefetch=1, timeout=10_000)
        wait_for_listener(conn)
        sender = threading.Timer(0.3, ocr_receipt.send)
        sender.start()
        started = time.monotonic()
        message = next(consumer)  # claims nothing, then sleeps until woken
        sender.join()
        assert message is not None
        assert time.monotonic() - started < 2
        consumer.close()
    finally:
        broker.close()


def test_consumers_poll_when_listen_is_off(database_url, conn):
    broker = PostgresBroker(database_url, poll_interval_ms=100, listen=False)
    try:
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="poll")
        def ocr_receipt():
            pass

        consumer = broker.consume("poll", prefetch=1, timeout=10_000)
        sender = threading.Timer(0.3, ocr_receipt.send)
        sender.start()
        started = time.monotonic()
        message = next(consumer)
        sender.join()
        assert message is not None
        assert time.monotonic() - started < 2
        assert not any(b["query"].startswith("LISTEN") for b in other_backends(conn))
        consumer.close()
    finally:
        broker.close()


def test_delay_queue_consumers_touch_no_database(database_url, conn):
    broker = PostgresBroker(database_url)
    try:
        broker.declare_queue("ocr")
        consumer = broker.consume("ocr.DQ", prefetch=1000, timeout=50)
        assert next(consumer) is None
        consumer.close()
        assert other_backends(conn) == []
    finally:
        broker.close()


def test_connections_stay_bounded_whatever_the_number_of_queues(database_url, conn):
    broker = PostgresBroker(database_url, pool_max_size=3, poll_interval_ms=100)
    dramatiq.set_broker(broker)
    ran = []
    actors = []
    for n in range(12):

        def ocr_receipt(n=n):
            ran.append(n)

        actors.append(dramatiq.actor(queue_name=f"q{n}", actor_name=f"ocr_{n}")(ocr_receipt))
    worker = start_worker(broker)
    try:
        for actor in actors:
            actor.send()
        for n in range(12):
            broker.join(f"q{n}", timeout=10_000)
        worker.join()
        backends = other_backends(conn)
    finally:
        worker.stop()
        broker.close()
    assert sorted(ran) == list(range(12))
    assert len(backends) <= 3 + 1, backends  # the pool and the listener


def test_broker_sessions_plan_their_statements_once(broker):
    """The claim and the acks are prepared statements: re-planning them on every
    execution (PostgreSQL's default heuristic for these) cost more than running them."""
    with broker.pool_connection() as conn:
        row = conn.execute("SHOW plan_cache_mode").fetchone()
    assert row is not None and list(row.values()) == ["force_generic_plan"]
