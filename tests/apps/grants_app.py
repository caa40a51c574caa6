"""Actors for the least-privilege test: workers run them as a role granted `--worker`.

Each run appends its job number to the file GRANTS_RUNS_FILE (the worker role may
touch receiptq's objects only, so runs are noted outside the database); `note_result`
also returns a value, stored by the results backend.
"""

import os

import dramatiq
from dramatiq.results import Results

from receiptq.broker import PostgresBroker
from receiptq.results import PostgresResultBackend

URL = os.environ["RECEIPTQ_DATABASE_URL"]
broker = PostgresBroker(URL)
broker.add_middleware(Results(backend=PostgresResultBackend(URL)))
dramatiq.set_broker(broker)


def _note(job_no: int) -> None:
    with open(os.environ["GRANTS_RUNS_FILE"], "a") as runs:
        runs.write(f"{job_no}\n")


@dramatiq.actor(queue_name="granted", max_retries=0)
def note(job_no: int) -> None:
    _note(job_no)


@dramatiq.actor(queue_name="granted", max_retries=0, store_results=True)
def note_result(job_no: int) -> int:
    _note(job_no)
    return job_no * 2
