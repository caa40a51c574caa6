"""Sending, as the broker does it: the connection a send writes on (the caller's
transaction bound with :meth:`Sending.transaction`, else the pool), the job row a
message becomes (its actor's priority and retries), and how a bulk send stores its
rows (a COPY for jobs due now, else one INSERT from arrays; :meth:`Sending._store`)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg
import psycopg.errors
from dramatiq.actor import Actor
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError, Retries
from psycopg.pq import TransactionStatus

from receiptq import db
from receiptq.pg.messages import JobRow, job_columns, job_row, user_key
from receiptq.pg.runtime import Runtime
from receiptq.tiers import TierPolicy

#: Dramatiq's Retries default, used when no Retries middleware says otherwise.
DEFAULT_MAX_RETRIES = 20

logger = logging.getLogger("dramatiq.broker.PostgresBroker")


#: Jobs per (queue, actor) stored by one send.
SentCounts = dict[tuple[str, str], int]


#: Message options that keep a job out of ``job_copy_new`` (see :func:`copyable`).
_NOT_COPIED = ("eta", "unique_key")


def copyable(message: Message[Any], delay: int | None) -> bool:
    """A message ``job_copy_new`` can store: due now (no delay, no eta) and no
    unique key (expected to collide)."""
    options = message.options
    return not delay and not any(name in options for name in _NOT_COPIED)


def copy_rows(
    conn: psycopg.Connection[Any],
    rows: Iterable[JobRow],
    user_round: Callable[[JobRow], int] | None = None,
) -> SentCounts | None:
    """Store new jobs with COPY as ``rows`` yields them (so the server stores the
    first while the rest are being encoded); how many per (queue, actor), or None
    when a message id was already in the table and nothing was stored. Jobs with a
    user take their round from ``user_round`` (:func:`user_rounds`).

    An error while ``rows`` is read (a message that cannot be stored) aborts the
    COPY: nothing is stored. Inside the caller's transaction the COPY runs in a
    savepoint, so that its failure leaves that transaction usable.
    """
    counts: Counter[tuple[str, str]] = Counter()

    def fields() -> Iterator[tuple[Any, ...]]:
        for row in rows:
            counts[row.queue, row.actor] += 1
            yield row.copy_fields(user_round(row) if user_round is not None else 0)

    in_transaction = conn.info.transaction_status != TransactionStatus.IDLE
    try:
        with conn.transaction() if in_transaction else nullcontext():
            db.copy_in(conn, "job_copy_new", fields())
    except psycopg.errors.UniqueViolation:
        return None
    return dict(counts)


def user_rounds(
    conn: psycopg.Connection[Any], users: Iterable[tuple[str, str, str] | None]
) -> Callable[[JobRow], int]:
    """The user round of each job of a batch due now, to be asked once per job in
    send order: a user's k-th job in the batch gets the round its base (read in one
    statement for the batch's ``users``, :func:`receiptq.pg.messages.user_key`) + k,
    as ``job_enqueue_many`` and the row trigger assign them; no user, round 0."""
    keys = list(dict.fromkeys(key for key in users if key is not None))
    params = {
        "queues": [queue for queue, _, _ in keys],
        "classes": [cls for _, cls, _ in keys],
        "user_ids": [user for _, _, user in keys],
    }
    last = {
        (b["queue"], b["cls"], b["user_id"]): b["base"]
        for b in db.fetch_all(conn, "job_user_round_bases", params)
    }

    def user_round(row: JobRow) -> int:
        if row.user_id is None:
            return 0
        key = (row.queue, row.tier or "", row.user_id)
        last[key] += 1
        return last[key]

    return user_round


def insert_rows(conn: psycopg.Connection[Any], rows: list[JobRow]) -> SentCounts:
    """Store new jobs with ``job_enqueue_many``, dropping those whose message id or
    unique key is queued or running; how many were stored per (queue, actor)."""
    stored = db.fetch_all(conn, "job_enqueue_many", job_columns(rows))
    return {(r["queue"], r["actor"]): r["jobs"] for r in stored}


def hooked(middleware: list[Middleware], hook: str) -> list[Middleware]:
    """The middleware that define ``hook`` themselves (``Middleware``'s own hooks do
    nothing), in stack order."""
    base = getattr(Middleware, hook)
    return [m for m in middleware if getattr(getattr(m, hook), "__func__", None) is not base]


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
        return next(self._rows([message], delay))

    def _rows(self, messages: Sequence[Message[Any]], delay: int | None) -> Iterator[JobRow]:
        """Validate messages and turn them into job rows, one at a time (each actor's
        priority and retries looked up once per call)."""
        defaults: dict[str, tuple[int, int | None]] = {}
        for message in messages:
            name = message.actor_name
            known = defaults.get(name)
            if known is None:
                actor = self.actors.get(name)
                priority = actor.priority if actor is not None else 0
                known = defaults[name] = (priority, self._max_retries(name))
            yield job_row(
                message,
                delay_ms=delay,
                actor_priority=known[0],
                max_retries=known[1],
                max_bytes=self.max_message_bytes,
                tiers=self.tier_policy,
            )

    def _store(
        self, conn: psycopg.Connection[Any], messages: Sequence[Message[Any]], delay: int | None
    ) -> SentCounts:
        """Store new messages in one statement on ``conn``; how many were stored per
        (queue, actor). Every message is validated before anything commits.

        A bulk send of jobs due now without unique keys (every message
        :func:`copyable`) streams into a COPY as the messages are encoded, once the
        rounds of its users, if it has some, are known (one statement for the
        batch). Should one of its message ids already be stored,
        the COPY stores nothing and the batch goes through ``job_enqueue_many``, as
        every other batch does, which drops the duplicates."""
        if all(copyable(message, delay) for message in messages):
            rounds = None
            if any("user_id" in message.options for message in messages):
                rounds = user_rounds(conn, (user_key(message) for message in messages))
            counts = copy_rows(conn, self._rows(messages, delay), rounds)
            if counts is not None:
                return counts
        return insert_rows(conn, list(self._rows(messages, delay)))

    def _emit_enqueue(self, when: str, messages: Sequence[Message[Any]], delay: int | None) -> None:
        """``emit_before``/``emit_after("enqueue", ...)`` for each of many messages,
        with Dramatiq's semantics (before: in stack order, a ``MiddlewareError``
        stops the send, any other error is logged; after: in reverse, errors logged),
        calling only the middleware that define the hook: in a bulk send of 1,000
        messages, Dramatiq's loop over every middleware's empty hooks cost more than
        encoding the messages."""
        hook = f"{when}_enqueue"
        stack = hooked(self.middleware, hook)
        if when == "after":
            stack.reverse()
        for message in messages:
            for middleware in stack:
                try:
                    getattr(middleware, hook)(self, message, delay)
                except MiddlewareError:
                    if when == "after":
                        logger.critical(
                            "Unexpected failure in %s of %r.", hook, middleware, exc_info=True
                        )
                    else:
                        raise
                except Exception:
                    logger.critical(
                        "Unexpected failure in %s of %r.", hook, middleware, exc_info=True
                    )
