"""Slow jobs for tests with real `dramatiq` worker processes: `slow` notes when it
starts and in which process, then works for a few seconds."""

import os
import time

import dramatiq

from receiptq.broker import PostgresBroker

broker = PostgresBroker(os.environ["RECEIPTQ_DATABASE_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="slow", max_retries=0)
def slow(job_no: int, seconds: float) -> None:
    with broker.connection() as conn:
        conn.execute(
            "INSERT INTO test_started (job_no, pid, at) VALUES (%s, %s, clock_timestamp())",
            (job_no, os.getpid()),
        )
    time.sleep(seconds)
