"""Acks and heartbeats touch the same running rows at the same time: they must
never deadlock (issue #11: PostgreSQL killed acks in a chaos run, finished jobs
piled up and ran again after a kill)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import dramatiq
import psycopg

from receiptq import db
from receiptq.broker import PostgresBroker

HAMMER_S = 3.0


def claim_all(broker: PostgresBroker, jobs: int) -> tuple[list[int], list[int]]:
    @dramatiq.actor(queue_name="locks")
    def noop():
        pass

    broker.enqueue_many([noop.message() for _ in range(jobs)])
    claimed = broker.claim("locks", jobs)
    assert len(claimed) == jobs
    return [p.job_id for p in claimed], [p.attempt for p in claimed]


def hammer(url: str, until: float, step: Any, deadlocks: list[str]) -> None:
    """Run ``step(conn, rng)`` on a connection of its own until ``until``."""
    rng = random.Random()
    with db.connect(url) as conn:
        while time.monotonic() < until:
            try:
                step(conn, rng)
            except psycopg.errors.DeadlockDetected as exc:
                deadlocks.append(str(exc).splitlines()[0])


def test_concurrent_acks_and_heartbeats_over_the_same_rows_never_deadlock(broker, database_url):
    ids, attempts = claim_all(broker, 80)
    owner = {"worker_id": broker.worker_id, "lease_s": 30}

    def acks_of(half: range) -> Any:
        def ack(conn: psycopg.Connection[Any], rng: random.Random) -> None:
            # An ack batch in the order its jobs finished, rolled back so that the rows
            # stay for the next round (it takes the locks a committed ack takes). Two
            # flushers never ack the same job: each acks its own half.
            batch = rng.sample(half, len(half) // 2)
            params = {"ids": [ids[i] for i in batch], "attempts": [attempts[i] for i in batch]}
            with conn.transaction(force_rollback=True):
                db.execute(conn, "job_ack_batch", params)

        return ack

    def extend(conn: psycopg.Connection[Any], rng: random.Random) -> None:
        db.execute(conn, "job_extend_leases", {**owner, "ids": rng.sample(ids, len(ids))})

    deadlocks: list[str] = []
    until = time.monotonic() + HAMMER_S
    halves = (range(0, len(ids) // 2), range(len(ids) // 2, len(ids)))
    threads = [
        threading.Thread(target=hammer, args=(database_url, until, step, deadlocks))
        for step in (acks_of(halves[0]), acks_of(halves[1]), extend, extend)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert deadlocks == []
    with db.connect(database_url) as conn:  # every lease is still held and renewable
        assert db.execute(conn, "job_extend_leases", {**owner, "ids": ids}) == len(ids)
