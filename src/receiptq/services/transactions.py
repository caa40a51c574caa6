"""Bank transactions typed in or imported from a CSV file: their format and validation.

The receipt app matches receipts against its users' bank transactions; these are
how an operator adds them (``receiptq transactions add|import``). A CSV file has
this header and one transaction per line (any column order, UTF-8, a BOM is fine)::

    user,posted_on,amount,currency,description
    ana@example.com,2026-03-14,12.50,EUR,CARD CORNER CAFE

``user`` is the user's email or id; ``posted_on`` a date YYYY-MM-DD; ``amount`` a
number with a dot and at most 2 decimals (negative for a refund); ``currency`` a
3-letter code; ``description`` the bank's text (matched against the receipt's
merchant). Validation stops at the first bad line and names it: either every line
is stored or none is.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg

from receiptq.services import receipts

CSV_COLUMNS = ("user", "posted_on", "amount", "currency", "description")
#: Longest description kept (bank texts are short; a longer one is a wrong column).
MAX_DESCRIPTION = 200
#: Longest piece of bad input quoted back in an error.
QUOTE_MAX = 40

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_AMOUNT = re.compile(r"-?\d{1,10}(\.\d{1,2})?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


@dataclass(frozen=True)
class NewTransaction:
    """One validated transaction, its user not looked up yet; ``line`` in its file (0:
    typed in)."""

    user: str
    posted_on: date
    amount: Decimal
    currency: str
    description: str
    line: int = 0


def _quote(value: str) -> str:
    return repr(value if len(value) <= QUOTE_MAX else value[:QUOTE_MAX] + "...")


def parse(fields: dict[str, str | None], line: int = 0) -> NewTransaction:
    """Validate one transaction's fields (strings); ValueError says which and how."""
    values = {name: (fields.get(name) or "").strip() for name in CSV_COLUMNS}
    if not values["user"]:
        raise ValueError("user is empty: give the user's email or id")
    posted_on = values["posted_on"]
    try:
        if not _DATE.fullmatch(posted_on):
            raise ValueError
        day = date.fromisoformat(posted_on)
    except ValueError:
        raise ValueError(f"posted_on {_quote(posted_on)} is not a date: use YYYY-MM-DD") from None
    if not _AMOUNT.fullmatch(values["amount"]):
        raise ValueError(
            f"amount {_quote(values['amount'])} is not an amount: use digits with a dot and "
            "at most 2 decimals, e.g. 12.50"
        )
    if not _CURRENCY.fullmatch(values["currency"]):
        raise ValueError(
            f"currency {_quote(values['currency'])} is not a currency code: use 3 letters, e.g. EUR"
        )
    description = values["description"]
    if not description or len(description) > MAX_DESCRIPTION:
        raise ValueError(f"description must be 1 to {MAX_DESCRIPTION} characters")
    return NewTransaction(
        values["user"], day, Decimal(values["amount"]), values["currency"].upper(),
        description, line,
    )  # fmt: skip


def parse_csv(text: str) -> list[NewTransaction]:
    """Every transaction of a CSV file (see the module's docstring); ValueError names
    the first bad line ("line 3: amount ..."), or says what the header lacks."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    if sorted(header) != sorted(CSV_COLUMNS):
        raise ValueError(
            f"line 1: the header must name the columns {','.join(CSV_COLUMNS)} "
            f"(got {_quote(','.join(header))})"
        )
    reader.fieldnames = header
    found = []
    for row in reader:
        line = reader.line_num
        if None in row or None in row.values():
            named = sum(value is not None for key, value in row.items() if key is not None)
            got = named + len(row.get(None) or [])
            raise ValueError(
                f"line {line}: expected {len(CSV_COLUMNS)} fields, got {got} (amounts take a "
                "dot, e.g. 12.50; quote a field that holds a comma)"
            )
        try:
            found.append(parse(row, line))
        except ValueError as exc:
            raise ValueError(f"line {line}: {exc}") from None
    if not found:
        raise ValueError("no transactions: the file has a header and nothing else")
    return found


def store(conn: psycopg.Connection[Any], items: list[NewTransaction]) -> list[dict[str, Any]]:
    """Store transactions, in the caller's transaction; the rows stored. UnknownUser
    names the line of a user nobody has (then roll back: none is stored)."""
    stored = []
    for item in items:
        try:
            user = receipts.get_user(conn, item.user)
        except receipts.UnknownUser as exc:
            where = f"line {item.line}: " if item.line else ""
            raise receipts.UnknownUser(f"{where}{exc}") from None
        transaction_id = receipts.add_transaction(
            conn, user["id"], item.posted_on, item.amount, item.currency, item.description
        )
        stored.append({
            "id": transaction_id, "user_id": user["id"], "email": user["email"],
            "posted_on": item.posted_on, "amount": item.amount, "currency": item.currency,
            "description": item.description,
        })  # fmt: skip
    return stored
