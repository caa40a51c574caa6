"""The receipt app's broker: built on first use, with its middleware and actors.

``dramatiq receiptq.actors`` (and ``periodiq receiptq.actors``) import
:mod:`receiptq.actors`, which sets :func:`get_broker`'s broker as Dramatiq's
global one. That broker reads its settings (the environment), adds the app's
middleware (group callbacks, tiers from ``receiptq_app.users``) and declares the
receipt pipeline's steps the first time it is used: a worker's boot, a send, a
lookup of an actor. Importing reads no environment, starts no embedded
PostgreSQL and connects nowhere.

:func:`build_broker` makes another one on given settings (the CLI's ``--url``,
the demo's queues, tests): the same declarations, from the same table.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from dramatiq import Actor, Message
from dramatiq.broker import Consumer
from dramatiq.middleware import Middleware

from receiptq.actors import receipts
from receiptq.actors.receipts import process_receipt, retry_receipt, submit_receipt
from receiptq.broker import PostgresBroker
from receiptq.middleware import add_app_middleware, receiptq_middleware
from receiptq.settings import Settings

__all__ = [
    "AppBroker",
    "build_broker",
    "get_broker",
    "process_receipt",
    "receipt_broker",
    "retry_receipt",
    "submit_receipt",
]


class AppBroker(PostgresBroker):
    """A :class:`PostgresBroker` with receiptq's middleware that, on first use, adds
    the app's middleware and declares the receipt steps (on its settings' queues)."""

    _may_declare = False
    _declared = False

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings=settings, middleware=receiptq_middleware())
        self._may_declare = True
        if settings is not None:
            self._declare_app()

    def _declare_app(self) -> None:
        if not self._may_declare or self._declared:
            return
        with self._lock:
            if self._declared:
                return
            self._declared = True  # first: adding middleware asks for the queues again
            try:
                add_app_middleware(self)
                receipts.declare(self, self.read_settings())
            except BaseException:
                self._declared = False
                raise

    def add_middleware(self, middleware: Middleware, **where: Any) -> None:
        """As Dramatiq's, without declaring the app: middleware added now hears of
        the app's queues and actors when they are declared."""
        may_declare, self._may_declare = self._may_declare, False
        try:
            super().add_middleware(middleware, **where)
        finally:
            self._may_declare = may_declare

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        if signal == "worker_boot":  # a worker starts: it consumes the app's queues
            self._declare_app()
        super().emit_before(signal, *args, **kwargs)

    def get_actor(self, actor_name: str) -> Actor[Any, Any]:
        self._declare_app()
        return super().get_actor(actor_name)

    def get_declared_actors(self) -> set[str]:
        self._declare_app()
        return super().get_declared_actors()

    def get_declared_queues(self) -> set[str]:
        self._declare_app()
        return super().get_declared_queues()

    def get_declared_delay_queues(self) -> set[str]:
        self._declare_app()
        return super().get_declared_delay_queues()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        self._declare_app()
        return super().consume(queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        self._declare_app()
        return super().enqueue(message, delay=delay)

    def enqueue_many(self, messages: Sequence[Message[Any]], *, delay: int | None = None) -> int:
        self._declare_app()
        return super().enqueue_many(messages, delay=delay)


_lock = threading.Lock()
_broker: AppBroker | None = None


def get_broker() -> AppBroker:
    """This process's receipt-app broker (settings from the environment, on first use)."""
    global _broker
    with _lock:
        if _broker is None:
            _broker = AppBroker()
        return _broker


def build_broker(settings: Settings) -> AppBroker:
    """A receipt-app broker on ``settings``, declared at once. Close it when done."""
    return AppBroker(settings)


def receipt_broker(url: str, *, queue_prefix: str | None = None) -> AppBroker:
    """A broker on ``url`` with the receipt steps declared as the workers declare them
    (on queues with ``queue_prefix``, default the environment's): for sending to
    another database than the one this process's workers use. Close it when done."""
    return build_broker(Settings.from_env(database_url=url, receipt_queue_prefix=queue_prefix))
