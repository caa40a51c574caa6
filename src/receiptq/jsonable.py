"""How receiptq writes the values its rows hold as JSON: the one encoder behind every
command's ``--json`` and the dashboard's API."""

from __future__ import annotations

from datetime import date
from typing import Any


def default(value: Any) -> Any:
    """A value :mod:`json` cannot write itself: a datetime or date as ISO 8601 text,
    anything else (a Decimal amount, a UUID) as its text."""
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    return str(value)
