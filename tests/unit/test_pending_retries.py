"""PendingRetries on its own (no database): what is kept, when it is stored, the bound.
The path through a real PostgreSQL restart is in test_retry_outage.py."""

from __future__ import annotations

import threading
import time

from receiptq.pg.pending_retries import PendingRetries
from tests_support import wait_until


class Recorder:
    def __init__(self) -> None:
        self.stored: list[tuple[str, int]] = []
        self.done = threading.Event()

    def __call__(self, message: str, delay_ms: int) -> None:
        self.stored.append((message, delay_ms))
        self.done.set()


def test_a_kept_retry_is_stored_only_after_its_delivery_is_handed_over():
    store = Recorder()
    pending = PendingRetries(store)
    assert pending.keep(1, "retry of job 1", 60_000)
    assert not store.done.wait(0.2)  # the delivery is not over yet
    assert pending.hand_over(1)
    wait_until(lambda: store.stored, 5, "the retry to be stored")
    [(message, delay_ms)] = store.stored
    assert message == "retry of job 1"
    assert 50_000 < delay_ms <= 60_000 - 200  # the time it waited here counts
    assert not pending.hand_over(1)  # stored once, then forgotten
    pending.close()


def test_retries_beyond_the_limit_are_left_to_their_leases():
    pending = PendingRetries(Recorder(), limit=2)
    assert pending.keep(1, "a", 100) and pending.keep(2, "b", 100)
    assert not pending.keep(3, "c", 100)
    assert not pending.hand_over(3)  # the ack goes on as for a retry never stored


def test_a_delay_already_waited_out_is_stored_as_due_now():
    store = Recorder()
    pending = PendingRetries(store)
    pending.keep(7, "late", 50)
    time.sleep(0.1)
    pending.hand_over(7)
    wait_until(lambda: store.stored, 5, "the retry to be stored")
    assert store.stored == [("late", 0)]
    pending.close()
