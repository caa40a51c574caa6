"""Read merchant, date, total and currency out of a receipt's OCR text (pure functions).

OCR engines drop or add spaces ("TOTALEUR 9.84") and read a line's label and
amount as separate boxes, which :mod:`receiptq.services.ocr` joins back into
lines. The rules here are deliberately forgiving about spacing and strict
about what counts as an amount (two decimals) and a date (a valid calendar day).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

#: Currency symbols and codes, in the order they are looked for.
CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP", "$": "USD", "¥": "JPY"}
CURRENCY_CODES = ("EUR", "USD", "GBP", "CHF", "CAD", "AUD", "SEK", "JPY")

#: Labels of the line that carries the amount paid, strongest first.
TOTAL_LABELS = ("GRANDTOTAL", "AMOUNTDUE", "TOTALDUE", "TOTALTOPAY", "TOTAL", "SUMME", "BALANCEDUE")
#: Labels that look like a total but are not the amount paid.
NOT_TOTAL_LABELS = ("SUBTOTAL", "TOTALITEMS", "TOTALSAVINGS", "TOTALVAT", "TOTALTAX", "ITEMS")

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("JAN", "JANUARY"),
            ("FEB", "FEBRUARY"),
            ("MAR", "MARCH"),
            ("APR", "APRIL"),
            ("MAY",),
            ("JUN", "JUNE"),
            ("JUL", "JULY"),
            ("AUG", "AUGUST"),
            ("SEP", "SEPT", "SEPTEMBER"),
            ("OCT", "OCTOBER"),
            ("NOV", "NOVEMBER"),
            ("DEC", "DECEMBER"),
        ],
        start=1,
    )
    for name in names
}

# 1,234.56 / 1.234,56 / 1234.56 / 12,50 : a decimal separator and exactly two decimals.
_AMOUNT = re.compile(r"(?<![\d.,])(\d{1,3}(?:[,.]\d{3})+|\d+)\s?[.,]\s?(\d{2})(?!\d|[.,]\d)")
# A year ends at a non-digit, or where a time glued on by OCR starts ("20263:05PM").
_END_OF_YEAR = r"(?=\D|$|\d{1,2}:\d{2})"
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
# OCR reads a dot as a colon now and then ("18.11:2026").
_DMY_DATE = re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.:](\d{4}|\d{2})" + _END_OF_YEAR)
_DAY_MONTH_NAME = re.compile(r"(?<!\d)(\d{1,2})\s*([A-Z]{3,9})\.?,?\s*(\d{4})" + _END_OF_YEAR)
_MONTH_NAME_DAY = re.compile(
    r"\b([A-Z]{3,9})\.?\s*(\d{1,2})(?:ST|ND|RD|TH)?,?\s*(\d{4})" + _END_OF_YEAR
)


@dataclass(frozen=True)
class ReceiptFields:
    """What could be read from a receipt; None where nothing was found."""

    merchant: str | None
    purchased_on: date | None
    total: Decimal | None
    currency: str | None


def parse_receipt(text: str) -> ReceiptFields:
    """All the fields of a receipt's OCR text (one line per receipt line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ReceiptFields(
        merchant=parse_merchant(lines),
        purchased_on=parse_date(text),
        total=parse_total(lines),
        currency=parse_currency(text),
    )


def parse_amounts(line: str) -> list[Decimal]:
    """Every amount with two decimals on a line, in order."""
    amounts = []
    for whole, cents in _AMOUNT.findall(line):
        digits = re.sub(r"[,.]", "", whole)
        amounts.append(Decimal(f"{int(digits)}.{cents}"))
    return amounts


def _squeezed(line: str) -> str:
    """Upper-case letters only: what survives OCR's spacing whims."""
    return re.sub(r"[^A-Z]", "", line.upper())


def parse_total(lines: list[str]) -> Decimal | None:
    """The amount on the strongest total line (the last such line wins among equals);
    without one, the largest amount on the receipt."""
    best: tuple[int, int] | None = None
    best_amount: Decimal | None = None
    for index, line in enumerate(lines):
        letters = _squeezed(line)
        if any(label in letters for label in NOT_TOTAL_LABELS):
            continue
        strength = next(
            (len(TOTAL_LABELS) - i for i, label in enumerate(TOTAL_LABELS) if label in letters), 0
        )
        amounts = parse_amounts(line)
        if strength and amounts and (best is None or (strength, index) >= best):
            best, best_amount = (strength, index), amounts[-1]
    if best_amount is not None:
        return best_amount
    everything = [amount for line in lines for amount in parse_amounts(line)]
    return max(everything) if everything else None


def parse_currency(text: str) -> str | None:
    """The currency of the receipt: an ISO code on it, else a currency symbol."""
    upper = text.upper()
    for code in CURRENCY_CODES:
        if re.search(rf"(?<![A-Z]){code}(?![A-Z])", upper) or re.search(
            rf"TOTAL{code}", _squeezed(upper)
        ):
            return code
    for symbol, code in CURRENCY_SYMBOLS.items():
        if symbol in text:
            return code
    return None


def _valid(year: int, month: int, day: int) -> date | None:
    if year < 100:
        year += 2000
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_date(text: str) -> date | None:
    """The first valid date: 2026-03-14, 14/03/2026, 14.03.26, 14 Mar 2026, Mar 14, 2026."""
    upper = text.upper()
    candidates: list[tuple[int, date]] = []
    for m in _ISO_DATE.finditer(upper):
        found = _valid(int(m[1]), int(m[2]), int(m[3]))
        if found:
            candidates.append((m.start(), found))
    for m in _DMY_DATE.finditer(upper):
        found = _valid(int(m[3]), int(m[2]), int(m[1]))
        if found:
            candidates.append((m.start(), found))
    for m in _DAY_MONTH_NAME.finditer(upper):
        month = MONTHS.get(m[2])
        found = _valid(int(m[3]), month, int(m[1])) if month else None
        if found:
            candidates.append((m.start(), found))
    for m in _MONTH_NAME_DAY.finditer(upper):
        month = MONTHS.get(m[1])
        found = _valid(int(m[3]), month, int(m[2])) if month else None
        if found:
            candidates.append((m.start(), found))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def parse_merchant(lines: list[str]) -> str | None:
    """The first line that reads like a name: mostly letters, no amount, no date."""
    for line in lines[:6]:
        letters = sum(c.isalpha() for c in line)
        if letters < 3 or letters < 0.6 * len(line.replace(" ", "")):
            continue
        if parse_amounts(line) or parse_date(line):
            continue
        return " ".join(line.split())
    return None
