"""Unit tests of receiptq.pg.messages: validating messages and turning them into rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from dramatiq.message import Message
from hypothesis import given
from hypothesis import strategies as st

from receiptq.pg.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MessageError,
    decode_message,
    encode_message,
    job_row,
)


def make_message(queue: str = "ocr", *args: Any, **options: Any) -> Message[Any]:
    return Message(
        queue_name=queue, actor_name="ocr_receipt", args=args, kwargs={}, options=options
    )


def row_of(message: Message[Any], **overrides: Any):
    params: dict[str, Any] = {
        "delay_ms": None,
        "actor_priority": 0,
        "max_retries": 20,
        "max_bytes": DEFAULT_MAX_MESSAGE_BYTES,
    }
    params.update(overrides)
    return job_row(message, **params)


# Text PostgreSQL can store in jsonb: no NUL, no lone surrogates.
storable_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(storable_text, children, max_size=4)
    ),
    max_leaves=12,
)


# -- encoding ------------------------------------------------------------------------


@given(args=st.lists(json_values, max_size=4), kwargs=st.dictionaries(storable_text, json_values))
def test_json_messages_survive_encode_and_decode(args, kwargs):
    message = Message(
        queue_name="ocr", actor_name="ocr_receipt", args=tuple(args), kwargs=kwargs, options={}
    )
    assert decode_message(encode_message(message, max_bytes=10**9)) == message


@pytest.mark.parametrize(
    "arg", [object(), {1, 2}, b"bytes", datetime(2024, 1, 1), float("nan"), float("inf")]
)
def test_non_json_argument_is_refused_with_a_clear_error(arg):
    with pytest.raises(MessageError, match=r"'ocr_receipt' is not JSON-serializable"):
        encode_message(make_message("ocr", arg), max_bytes=DEFAULT_MAX_MESSAGE_BYTES)


def test_message_over_the_size_limit_is_refused():
    message = make_message("ocr", "x" * 2000)
    with pytest.raises(MessageError, match=r"over the limit of 1000 bytes"):
        encode_message(message, max_bytes=1000)


def test_message_at_the_size_limit_is_accepted():
    message = make_message("ocr", "x")
    text = encode_message(message, max_bytes=10**6)
    assert encode_message(message, max_bytes=len(text.encode())) == text


def test_nul_character_that_postgres_cannot_store_is_refused():
    with pytest.raises(MessageError, match="NUL"):
        encode_message(make_message("ocr", "a\x00b"), max_bytes=DEFAULT_MAX_MESSAGE_BYTES)


def test_escaped_backslash_before_u0000_is_not_mistaken_for_nul():
    message = make_message("ocr", "a\\u0000b")
    assert decode_message(encode_message(message, max_bytes=10**6)) == message


def test_lone_surrogate_is_refused():
    with pytest.raises(MessageError, match="Unicode"):
        encode_message(make_message("ocr", "\ud800"), max_bytes=DEFAULT_MAX_MESSAGE_BYTES)


def test_eta_option_is_not_stored():
    text = encode_message(make_message("ocr", eta=123, priority=3), max_bytes=10**6)
    assert json.loads(text)["options"] == {"priority": 3}


def test_message_for_a_delay_queue_is_stored_under_its_canonical_queue():
    row = row_of(make_message("ocr.DQ", 1, eta=1_700_000_000_000))
    assert row.queue == "ocr"
    assert json.loads(row.message)["queue_name"] == "ocr"


# -- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "null",
        "[]",
        '{"queue_name": "ocr"}',
        '{"queue_name": "ocr", "actor_name": "a", "args": [], "kwargs": {}, "options": {},'
        ' "unexpected": 1}',
    ],
)
def test_undecodable_message_raises_message_error(text):
    with pytest.raises(MessageError, match="undecodable message"):
        decode_message(text)


@pytest.mark.parametrize(
    "field, value",
    [
        ("options", 5),
        ("options", []),
        ("kwargs", "x"),
        ("args", 7),
        ("args", "abc"),
        ("queue_name", 3),
        ("actor_name", None),
        ("message_id", 12),
        ("message_timestamp", "yesterday"),
    ],
)
def test_message_with_a_field_of_the_wrong_type_is_undecodable(field, value):
    fields = make_message("ocr", 1).asdict()
    fields["args"] = list(fields["args"])
    fields[field] = value
    with pytest.raises(MessageError, match="undecodable message"):
        decode_message(json.dumps(fields))


def test_decode_accepts_a_timestamp_written_as_a_float():
    fields = make_message("ocr", 1).asdict()
    fields.update(args=[1], message_timestamp=1_700_000_000_000.0)
    assert decode_message(json.dumps(fields)).message_timestamp == 1_700_000_000_000


def test_decode_accepts_a_dict_and_makes_args_a_tuple():
    fields = make_message("ocr", 1, 2).asdict()
    fields["args"] = [1, 2]
    message = decode_message(fields)
    assert message.args == (1, 2)


# -- rows ------------------------------------------------------------------------------


def test_eta_becomes_run_at():
    row = row_of(make_message("ocr", eta=1_700_000_000_500))
    assert row.run_at == datetime(2023, 11, 14, 22, 13, 20, 500_000, tzinfo=UTC)
    assert row.delay_s == 0


def test_delay_becomes_seconds_and_wins_over_eta():
    row = row_of(make_message("ocr", eta=1_700_000_000_000), delay_ms=1500)
    assert row.run_at is None
    assert row.delay_s == 1.5


def test_max_retries_becomes_max_attempts():
    assert row_of(make_message("ocr"), max_retries=3).max_attempts == 4
    assert row_of(make_message("ocr", max_retries=0), max_retries=3).max_attempts == 1
    assert row_of(make_message("ocr"), max_retries=None).max_attempts is None


def test_message_priority_wins_over_actor_priority():
    assert row_of(make_message("ocr"), actor_priority=7).priority == 7
    assert row_of(make_message("ocr", priority=2), actor_priority=7).priority == 2


def test_tier_user_and_unique_key_are_columns():
    row = row_of(make_message("ocr", tier="pro", user_id=42, unique_key="receipt-1"))
    assert (row.tier, row.user_id, row.unique_key) == ("pro", "42", "receipt-1")


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"priority": "high"}, "'priority' must be an integer"),
        ({"priority": True}, "'priority' must be an integer"),
        ({"priority": 1.5}, "'priority' must be an integer"),
        ({"priority": 2**40}, "'priority' must be"),
        ({"max_retries": "3"}, "'max_retries' must be an integer"),
        ({"max_retries": 2**40}, "'max_retries' must be"),
        ({"eta": "tomorrow"}, "'eta' must be epoch milliseconds"),
        ({"eta": float("nan")}, "'eta'"),
        ({"eta": 10**20}, "'eta'"),
        ({"tier": ["pro"]}, "'tier' must be a string"),
        ({"tier": ""}, "'tier' must have 1 to 256 characters"),
        ({"user_id": "u" * 300}, "'user_id' must have 1 to 256 characters"),
        ({"unique_key": 1.5}, "'unique_key' must be a string"),
    ],
)
def test_bad_option_is_refused(options, pattern):
    with pytest.raises(MessageError, match=pattern):
        row_of(make_message("ocr", **options))


@pytest.mark.parametrize("delay", [-1, "10", True, float("nan"), float("inf")])
def test_bad_delay_is_refused(delay):
    with pytest.raises(MessageError, match="delay must be"):
        row_of(make_message("ocr"), delay_ms=delay)


@pytest.mark.parametrize("queue", ["", "x; DROP TABLE jobs", "../etc", "a" * 300, "é"])
def test_hostile_queue_name_is_refused(queue):
    with pytest.raises(ValueError, match="invalid queue name"):
        row_of(make_message(queue))


def test_message_without_an_actor_name_is_refused():
    message = Message(queue_name="ocr", actor_name="", args=(), kwargs={}, options={})
    with pytest.raises(MessageError, match="actor name"):
        row_of(message)
