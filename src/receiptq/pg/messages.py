"""Turning Dramatiq messages into job rows and back (pure functions, no I/O)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from dramatiq.common import q_name
from dramatiq.message import Message

from receiptq.config import validate_queue_name
from receiptq.errors import MessageError, shorten
from receiptq.tiers import TierError, TierPolicy

__all__ = ["JobRow", "MessageError", "decode_message", "encode_message", "job_row"]

#: Default ceiling on an encoded message (1 MiB): bigger payloads belong in a table.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

#: Options that only make sense for one delivery and are never stored.
TRANSIENT_OPTIONS = ("eta",)

#: Integer options are stored in ``integer`` columns.
_INT32 = range(-(2**31), 2**31)
#: A JSON ``\u0000`` escape not itself escaped: PostgreSQL's jsonb cannot store NUL.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: The fields of a Dramatiq message, in its order (``Message.asdict()`` without
#: looking them up for every message of a bulk send).
_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(Message))
#: The JSON encoder of stored messages: compact, strict (no NaN), UTF-8 kept as is.
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
#: Message fields and the types a stored message must give them.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": (list, tuple),
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": (int, float),
}


class JobRow(NamedTuple):
    """The columns of one job, ready for the enqueue queries (a named tuple: a bulk
    send builds thousands)."""

    message_id: str
    queue: str
    actor: str
    priority: int
    run_at: datetime | None
    delay_s: float
    max_attempts: int | None
    tier: str | None
    user_id: str | None
    unique_key: str | None
    message: str

    def copy_fields(self, user_round: int = 0) -> tuple[Any, ...]:
        """The columns ``job_copy_new`` takes, in its order, with the job's round."""
        return (
            self.message_id,
            self.queue,
            self.actor,
            self.priority,
            self.max_attempts,
            self.tier,
            self.user_id,
            user_round,
            self.message,
        )

    def params(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "queue": self.queue,
            "actor": self.actor,
            "priority": self.priority,
            "run_at": self.run_at,
            "delay_s": self.delay_s,
            "max_attempts": self.max_attempts,
            "tier": self.tier,
            "user_id": self.user_id,
            "unique_key": self.unique_key,
            "message": self.message,
        }


def job_columns(rows: list[JobRow]) -> dict[str, list[Any]]:
    """Many jobs' columns, one array each, for ``job_enqueue_many``."""
    return {
        "message_ids": [r.message_id for r in rows],
        "queues": [r.queue for r in rows],
        "actors": [r.actor for r in rows],
        "priorities": [r.priority for r in rows],
        "run_ats": [r.run_at for r in rows],
        "delays_s": [r.delay_s for r in rows],
        "max_attempts": [r.max_attempts for r in rows],
        "tiers": [r.tier for r in rows],
        "user_ids": [r.user_id for r in rows],
        "unique_keys": [r.unique_key for r in rows],
        "messages": [r.message for r in rows],
    }


def _whose(message: Message[Any]) -> str:
    return f"message for actor {shorten(repr(message.actor_name))}"


def encode_message(message: Message[Any], *, max_bytes: int) -> str:
    """The message as compact JSON text, or a MessageError saying why not."""
    fields = {name: getattr(message, name) for name in _MESSAGE_FIELDS}
    options = message.options
    if any(name in options for name in TRANSIENT_OPTIONS):
        fields["options"] = {k: v for k, v in options.items() if k not in TRANSIENT_OPTIONS}
    try:
        text = _ENCODE(fields)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"{_whose(message)} is not JSON-serializable: {exc}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise MessageError(
            f"{_whose(message)} holds a string that is not valid Unicode (a lone surrogate)"
        ) from None
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise MessageError(
            f"{_whose(message)} holds a NUL character (\\u0000), "
            "which PostgreSQL cannot store in jsonb"
        )
    if size > max_bytes:
        raise MessageError(
            f"{_whose(message)} is {size} bytes encoded, over the "
            f"limit of {max_bytes} bytes (RECEIPTQ_MAX_MESSAGE_BYTES); store large data in a "
            "table and send its id"
        )
    return text


def decode_message(text: str | bytes | dict[str, Any]) -> Message[Any]:
    """Build a Message from a stored row; raises MessageError when it cannot."""
    try:
        fields = json.loads(text) if isinstance(text, str | bytes) else dict(text)
        for name, value in fields.items():
            kind = _FIELD_TYPES.get(name, object)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TypeError(f"field {name!r} is a {type(value).__name__}")
        fields["args"] = tuple(fields["args"])
        return Message(**fields)
    except Exception as exc:
        raise MessageError(f"undecodable message: {type(exc).__name__}: {exc}") from exc


def _int_option(message: Message[Any], name: str, default: int | None) -> int | None:
    value = message.options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"option {name!r} must be an integer, got {shorten(repr(value))}")
    if value not in _INT32:
        raise MessageError(f"option {name!r} must be a 32-bit integer, got {shorten(repr(value))}")
    return value


def _text_option(message: Message[Any], name: str) -> str | None:
    value = message.options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageError(f"option {name!r} must be a string, got {shorten(repr(value))}")
    text = str(value)
    if not 0 < len(text) <= 256:
        raise MessageError(f"option {name!r} must have 1 to 256 characters")
    return text


def canonical_queue(name: str) -> str:
    """The queue a message of queue ``name`` is stored on (a delay queue's is its
    canonical queue); raises ValueError for a name receiptq does not store."""
    if isinstance(name, str):
        return _canonical_queue(name)
    return q_name(validate_queue_name(name))


@lru_cache(maxsize=1024)
def _canonical_queue(name: str) -> str:
    return q_name(validate_queue_name(name))


def user_key(message: Message[Any]) -> tuple[str, str, str] | None:
    """(queue, tier class, user) of a message's job, as :func:`job_row` stores them,
    or None when it has no user: what a bulk send needs before its rows (their
    user rounds). Raises what :func:`job_row` would for a bad queue, tier or user."""
    user = _text_option(message, "user_id")
    if user is None:
        return None
    return canonical_queue(message.queue_name), _text_option(message, "tier") or "", user


def job_row(
    message: Message[Any],
    *,
    delay_ms: int | None,
    actor_priority: int,
    max_retries: int | None,
    max_bytes: int,
    tiers: TierPolicy | None = None,
) -> JobRow:
    """Validate a message and turn it into the row that stores it.

    A message addressed to a delay queue (``q.DQ``) is stored on its canonical
    queue; an ``eta`` option (epoch ms) becomes run_at; ``delay`` adds to now.
    With a tier policy, the ``tier`` option must name one of its tiers, and the
    tier's priority offset is added to the priority.
    """
    queue = canonical_queue(message.queue_name)
    if not isinstance(message.actor_name, str) or not message.actor_name:
        raise MessageError("a message needs an actor name")
    if delay_ms is not None and (
        isinstance(delay_ms, bool)
        or not isinstance(delay_ms, int | float)
        or not 0 <= delay_ms < math.inf
    ):
        raise MessageError(
            f"delay must be a number of milliseconds >= 0, got {shorten(repr(delay_ms))}"
        )
    eta = message.options.get("eta")
    run_at = None
    if eta is not None and delay_ms is None:
        if isinstance(eta, bool) or not isinstance(eta, int | float):
            raise MessageError(f"option 'eta' must be epoch milliseconds, got {shorten(repr(eta))}")
        try:
            run_at = datetime.fromtimestamp(eta / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise MessageError(
                f"option 'eta' is not a usable time, got {shorten(repr(eta))}"
            ) from None
    retries = _int_option(message, "max_retries", max_retries)
    tier = _text_option(message, "tier")
    priority = _int_option(message, "priority", actor_priority) or 0
    if tiers is not None and tier is not None:
        try:
            priority = tiers.effective_priority(priority, tier)
        except TierError as exc:
            raise MessageError(str(exc)) from None
        if priority not in _INT32:
            raise MessageError(f"priority {priority} with the tier's offset is out of range")
    if message.queue_name != queue:  # a delay queue's message is stored on its queue
        message = message.copy(queue_name=queue)
    return JobRow(
        message_id=str(message.message_id),
        queue=queue,
        actor=message.actor_name,
        priority=priority,
        run_at=run_at,
        delay_s=(delay_ms or 0) / 1000,
        max_attempts=None if retries is None else max(retries, 0) + 1,
        tier=tier,
        user_id=_text_option(message, "user_id"),
        unique_key=_text_option(message, "unique_key"),
        message=encode_message(message, max_bytes=max_bytes),
    )
