"""The chaos run's actor: ``dramatiq receiptq.tools.chaos.worker`` (started by
``python -m receiptq.tools.chaos``).

Importing this module sets up a PostgresBroker from the environment with Dramatiq's
default middleware (Retries among them), and declares ``chaos_job``: it sleeps for
its given milliseconds, then records its run in ``chaos.runs`` through the broker's
own pool, so that recording works again as soon as the broker does after a database
restart. A record that fails (the database is restarting) fails the job, which
Retries sends again; a worker killed mid-job leaves it to be rescued.
"""

from __future__ import annotations

import os
import time

import dramatiq

from receiptq import db
from receiptq.broker import PostgresBroker

broker = PostgresBroker()
dramatiq.set_broker(broker)

#: The queue and actor name of the chaos job (receiptq.tools.chaos sends to them).
QUEUE = "chaos"
ACTOR = "chaos_job"


@dramatiq.actor(
    queue_name=QUEUE, actor_name=ACTOR, max_retries=1000, min_backoff=100, max_backoff=2000
)
def chaos_job(job_no: int, ms: float) -> None:
    """Works for ``ms`` milliseconds, then records that it ran."""
    started = time.time()
    time.sleep(ms / 1000)
    with broker.connection() as conn:
        params = {
            "job_no": job_no,
            "pid": os.getpid(),
            "started_at": started,
            "finished_at": time.time(),
        }
        db.execute(conn, "chaos_record_run", params)
