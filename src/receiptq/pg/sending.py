"""Sending, as the broker does it: the connection a send writes on (the caller's
transaction bound with :meth:`Sending.transaction`, else the pool), and the job
row a message becomes (its actor's priority and retries)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from dramatiq.actor import Actor
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries

from receiptq.pg.messages import JobRow, job_row
from receiptq.pg.runtime import Runtime
from receiptq.tiers import TierPolicy

#: Dramatiq's Retries default, used when no Retries middleware says otherwise.
DEFAULT_MAX_RETRIES = 20


class Sending:
    """The broker's sending side (a mixin of :class:`receiptq.broker.PostgresBroker`)."""

    runtime: Runtime
    actors: dict[str, Actor[..., Any]]
    middleware: list[Middleware]
    max_message_bytes: int
    tier_policy: TierPolicy
    _local: threading.local

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one statement: the caller's transaction if one is bound
        with :meth:`transaction`, else one from the pool (autocommit)."""
        bound = getattr(self._local, "conn", None)
        if bound is not None:
            yield bound
        else:
            with self.runtime.pool().connection() as conn:
                yield conn

    @contextmanager
    def pool_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection from this process's pool (autocommit), never a transaction
        bound with :meth:`transaction`: for writes that must commit on their own at
        once, whatever the caller's transaction does (e.g. circuit-breaker state)."""
        with self.runtime.pool().connection() as conn:
            yield conn

    @contextmanager
    def transaction(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        """Send messages inside the caller's own transaction on ``conn``.

        Inside the block, ``actor.send(...)`` (and :meth:`enqueue_many`) write
        on ``conn`` without committing, so the jobs commit or roll back with the
        caller's own rows::

            with psycopg.connect(url) as conn, conn.transaction(), broker.transaction(conn):
                conn.execute("INSERT INTO receipts ...")
                process_receipt.send(receipt_id)
        """
        previous = getattr(self._local, "conn", None)
        self._local.conn = conn
        try:
            yield conn
        finally:
            self._local.conn = previous

    def _max_retries(self, actor_name: str) -> int | None:
        actor = self.actors.get(actor_name)
        if actor is not None and "max_retries" in actor.options:
            return actor.options["max_retries"]
        for middleware in self.middleware:
            if isinstance(middleware, Retries):
                return middleware.max_retries
        return DEFAULT_MAX_RETRIES

    def _row(self, message: Message[Any], delay: int | None) -> JobRow:
        actor = self.actors.get(message.actor_name)
        return job_row(
            message,
            delay_ms=delay,
            actor_priority=actor.priority if actor is not None else 0,
            max_retries=self._max_retries(message.actor_name),
            max_bytes=self.max_message_bytes,
            tiers=self.tier_policy,
        )
