"""A claim whose answer is lost: the connection goes as the claim commits, so the
worker never learns which jobs it took (a database restarted with ``-m immediate``
does this). Its next claim of the queue gives them back at once, instead of leaving
them running under a live worker until their lease runs out, and never gives back a
job the worker holds or is still settling.

The lost answer is a claim committed as the worker on a connection of the test's
own; the connection failure is the worker's next claim, waiting on a table lock,
terminated by the server (``pg_terminate_backend``): what the worker sees is the
same as when one claim commits and its connection dies."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import psycopg

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.tiers import UNTIERED
from tests_support import wait_until

QUEUE = "lost"


def row_of(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    return conn.execute(
        "SELECT state, attempt, lease_owner FROM receiptq.jobs WHERE id = %s", [job_id]
    ).fetchone()


def test_a_claim_whose_answer_was_lost_is_given_back_at_the_next_claim(database_url, conn, caplog):
    broker = PostgresBroker(database_url, lease_s=600, poll_interval_ms=50, ack_flush_ms=2)
    try:
        broker.declare_queue(QUEUE)
        broker.enqueue_many(
            [
                dramatiq.Message(
                    queue_name=QUEUE, actor_name="noop", args=(n,), kwargs={}, options={}
                )
                for n in range(6)
            ]
        )
        ids = [r["id"] for r in conn.execute("SELECT id FROM receiptq.jobs ORDER BY id")]
        consumer = broker.consume(QUEUE, prefetch=2, timeout=20_000)
        held, settling = next(consumer), next(consumer)
        assert [held.job_id, settling.job_id] == ids[:2]
        # A delivery that finished and whose ack is not written yet (kept through an
        # outage): not held any more, still running under this worker in the table.
        broker._holdings.land([settling.job_id])

        # The lost answer: jobs 3 and 4 claimed as this worker; it never saw them.
        params = {"queue": QUEUE, "worker_id": broker.worker_id, "lease_s": 600.0, "limit": 2}
        params |= {"classes": [UNTIERED], "quotas": [2]}
        with db.connect(database_url) as side:
            lost = [r["id"] for r in db.fetch_all(side, "job_claim_plain", params)]
        assert lost == ids[2:4]

        # The worker's next claim waits on a lock and its connection is cut.
        got: list[Any] = []
        with db.connect(database_url, autocommit=False) as locker:
            locker.execute("LOCK TABLE receiptq.jobs IN EXCLUSIVE MODE")
            claiming = threading.Thread(target=lambda: got.append(next(consumer)))
            with caplog.at_level(logging.INFO, logger="receiptq.pg.claims"):
                claiming.start()
                wait_until(lambda: terminate_waiting_claim(conn), 10, "the claim to wait")
                time.sleep(0.2)
                locker.rollback()
                claiming.join(20)
        assert not claiming.is_alive()

        # The next claim gave both back and took the first in line again.
        [again] = got
        assert again.job_id == lost[0]
        assert row_of(conn, lost[0])["attempt"] == 1  # the lost claim's attempt was returned
        assert row_of(conn, lost[1]) == {"state": "queued", "attempt": 0, "lease_owner": None}
        for job in (held, settling):  # what it holds or settles stays its own
            assert row_of(conn, job.job_id) == {
                "state": "running",
                "attempt": 1,
                "lease_owner": broker.worker_id,
            }
        assert [r.getMessage() for r in caplog.records if "gave back" in r.getMessage()] == [
            f"gave back 2 job(s) of {QUEUE} that a claim took as the connection was lost "
            "(its answer never arrived): they run now"
        ]
        consumer.close()
    finally:
        broker.close()


def terminate_waiting_claim(conn: psycopg.Connection[Any]) -> bool:
    """Terminate the worker's claim that waits on the table lock; True once done."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query LIKE '%%receiptq.jobs%%'"  # pg_stat_activity keeps its first 1 kB
    ).fetchall()
    return any(r["done"] for r in rows)
