"""receiptq's exceptions, below every other module so that any layer may raise them.

Two kinds:

- raised *to* the application, each with a message of one line that says what
  to do: :class:`MessageError` (a send refused, nothing written),
  :class:`ConfigError` (a setting receiptq cannot use), :class:`DatabaseNotMigrated`
  and :class:`DatabaseUnreachable` (the database cannot serve receiptq);
- raised *by* actors to steer their retries: :class:`PermanentError` (dead-letter
  at once) and :class:`RetryAfter` (retry at a given time).

Messages quote the user's input cut with :func:`shorten`, so a 100 KB argument
is not echoed back whole.
"""

from __future__ import annotations

import dramatiq.errors

#: How much of a bad value an error message quotes (characters).
QUOTE_LIMIT = 200


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as an error message may quote it: cut after ``limit`` characters,
    with the full length said (``'[1, 2, ... (102400 chars)'``)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


class ReceiptqError(Exception):
    """Base of the errors receiptq raises to the application; the message is one line."""


class ConfigError(ReceiptqError, ValueError):
    """A setting has a value receiptq cannot use."""


class MessageError(ReceiptqError, ValueError):
    """A message receiptq refuses to store; nothing was written."""


class DatabaseNotMigrated(ReceiptqError, dramatiq.errors.BrokerError):
    """The database lacks receiptq's tables (or some of them): run ``receiptq db migrate``."""


class DatabaseUnreachable(ReceiptqError, dramatiq.errors.BrokerConnectionError):
    """No connection to the database: wrong host, port, name or credentials, or it is down."""


class PermanentError(Exception):
    """An error that retrying cannot fix (bad input, a missing record): dead-letter at once."""


class RetryAfter(Exception):
    """A transient error whose cause says when to try again (e.g. HTTP 429 Retry-After).

    Parameters:
      seconds(float): run the job again this many seconds from now (>= 0).
      message(str): what happened.
    """

    def __init__(self, seconds: float, message: str = "") -> None:
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"RetryAfter seconds must be >= 0, got {seconds!r}")
        super().__init__(message or f"retry after {seconds} s")
        self.seconds = float(seconds)
