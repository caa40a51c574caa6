"""What this process's worker holds: the deliveries it claimed and has not
finished, per queue (what a queue's prefetch bounds), which of them started, and
the consumers waiting for a free slot or a notification.

Claims (:mod:`receiptq.pg.claims`) hold deliveries, settling them
(:mod:`receiptq.pg.settle`) lands them, the heartbeat reports them, and a
notification wakes the consumers of its queue (:meth:`Holdings.wake`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from receiptq.pg.delivery import JobProxy
from receiptq.pg.heartbeat import WorkerStatus


class Waiting(Protocol):
    """A consumer, as the holdings wake it."""

    queue_name: str

    def wake(self, *, scheduled: bool = False, tiered: bool = False) -> None: ...

    def slot_freed(self) -> None: ...


class Holdings:
    """The deliveries this process claimed and has not finished, and its consumers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: set[Waiting] = set()
        self._in_flight: dict[int, tuple[str, JobProxy]] = {}  # job id -> (queue, delivery)
        self._held: Counter[str] = Counter()  # per queue: its deliveries in _in_flight
        self._started: dict[int, tuple[int, float]] = {}  # of those, started: (attempt, at)
        #: Threads of this process's Dramatiq worker (None: no worker booted here).
        self.worker_threads: int | None = None
        #: The worker's shutdown began: claim no more.
        self.stopping = False

    def add(self, consumer: Waiting) -> None:
        with self._lock:
            self._consumers.add(consumer)

    def forget(self, consumer: Waiting) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def consumers(self) -> list[Waiting]:
        with self._lock:
            return list(self._consumers)

    def status(self) -> WorkerStatus:
        """What the heartbeat reports: queues consumed, deliveries held and started."""
        with self._lock:
            queues = sorted({c.queue_name for c in self._consumers})
            return WorkerStatus(queues, list(self._in_flight), dict(self._started))

    def held(self, queue_name: str) -> int:
        """Jobs of a queue this process claimed and has not finished: what its
        prefetch bounds, whichever consumer claimed them and whichever acks them
        (Dramatiq acks through the queue's current consumer, which after a consumer
        error is a new one)."""
        with self._lock:
            return self._held[queue_name]

    def delivery(self, job_id: int) -> JobProxy | None:
        """The delivery of a job this process holds, if it holds it."""
        with self._lock:
            held = self._in_flight.get(job_id)
        return None if held is None else held[1]

    def hold(self, queue_name: str, deliveries: Iterable[JobProxy]) -> None:
        with self._lock:
            for delivery in deliveries:
                if delivery.job_id not in self._in_flight:
                    self._in_flight[delivery.job_id] = (queue_name, delivery)
                    self._held[queue_name] += 1

    def started(self, delivery: JobProxy) -> None:
        """A worker thread started this delivery (the heartbeat reports it running)."""
        assert delivery.started_at is not None
        with self._lock:
            if delivery.job_id in self._in_flight:
                self._started[delivery.job_id] = (delivery.attempt, delivery.started_at)

    def land(self, job_ids: Iterable[int]) -> None:
        """These deliveries are over here: the heartbeat stops renewing their leases,
        and their slots are free again (each once, however often it is landed)."""
        freed = set()
        with self._lock:
            for job_id in job_ids:
                held = self._in_flight.pop(job_id, None)
                self._started.pop(job_id, None)
                if held is not None:
                    self._held[held[0]] -= 1
                    freed.add(held[0])
            consumers = [c for c in self._consumers if c.queue_name in freed]
        for consumer in consumers:
            consumer.slot_freed()

    def wake(self, payload: str) -> None:
        """A notification: ``queue`` (a job is due now), ``later:queue`` (jobs were
        scheduled) or ``tiered:queue`` (jobs with a tier arrived)."""
        kind, _, queue_name = payload.rpartition(":") if ":" in payload else ("", "", payload)
        with self._lock:
            consumers = [c for c in self._consumers if c.queue_name == queue_name]
        for consumer in consumers:
            consumer.wake(scheduled=kind in ("later", "tiered"), tiered=kind == "tiered")
