"""An app for the circuit-breaker test with real `dramatiq` worker processes.

`use_service` calls a "service" through the shared breaker "flaky". The service
is up or down as the row of test_service says (the test flips it). Every call is
recorded in test_calls, every finished job (with the attempt it used) in
test_runs, every postponed delivery in test_postponed, and every time this
process opens the breaker in test_opened.
"""

import os
import threading
from typing import Any

import dramatiq
import psycopg
from dramatiq.middleware import CurrentMessage, Middleware

from receiptq.broker import PostgresBroker
from receiptq.middleware import get_breaker, receiptq_middleware

URL = os.environ["RECEIPTQ_DATABASE_URL"]


class RecordPostponed(Middleware):
    def after_skip_message(self, broker: Any, message: Any) -> None:
        if getattr(message, "postponed", False):
            _execute(
                "INSERT INTO test_postponed (job_no, pid, at) VALUES (%s, %s, clock_timestamp())",
                (message.args[0], os.getpid()),
            )


broker = PostgresBroker(URL, middleware=[*receiptq_middleware(), RecordPostponed()])
dramatiq.set_broker(broker)

_lock = threading.Lock()
_conns: dict[int, psycopg.Connection] = {}


def _execute(statement: str, params: tuple) -> list[tuple]:
    with _lock:
        conn = _conns.get(os.getpid())
        if conn is None:
            conn = _conns[os.getpid()] = psycopg.connect(URL, autocommit=True)
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _service(job_no: int) -> int:
    [(up,)] = _execute("SELECT up FROM test_service", ())
    _execute(
        "INSERT INTO test_calls (job_no, pid, ok, at) VALUES (%s, %s, %s, clock_timestamp())",
        (job_no, os.getpid(), up),
    )
    if not up:
        raise ConnectionError("the service is down")
    return job_no


_patch_lock = threading.Lock()


def _breaker():
    breaker = get_breaker("flaky")
    with _patch_lock:
        if not getattr(breaker, "recording", False):
            _record_opens(breaker)
    return breaker


def _record_opens(breaker) -> None:
    opens = breaker.open

    def open_and_record() -> bool:
        _execute("INSERT INTO test_opened (pid, at) VALUES (%s, clock_timestamp())", (os.getpid(),))
        return opens()

    breaker.open = open_and_record  # type: ignore[method-assign]
    breaker.recording = True  # type: ignore[attr-defined]


@dramatiq.actor(
    queue_name="breakers",
    breakers=("flaky",),
    max_retries=50,
    min_backoff_ms=50,
    max_backoff_ms=200,
)
def use_service(job_no: int) -> None:
    _breaker().call(_service, job_no)
    attempt = CurrentMessage.get_current_message().attempt
    _execute(
        "INSERT INTO test_runs (job_no, pid, attempt) VALUES (%s, %s, %s)",
        (job_no, os.getpid(), attempt),
    )
