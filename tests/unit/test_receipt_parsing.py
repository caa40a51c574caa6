"""Parsing merchant, date, total and currency out of OCR text (pure, on a table of texts)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from receiptq.services.parsing import parse_amounts, parse_date, parse_receipt

CASES = [
    pytest.param(
        "GREENGROCERMARKET\n12 High Street\nDate:2026-03-14\nMilk 2L  3.49\nBread  2.10\n"
        "--------\nTOTAL  EUR 5.59\nThank you for shopping!",
        ("GREENGROCERMARKET", date(2026, 3, 14), Decimal("5.59"), "EUR"),
        id="classic-spaces-lost",
    ),
    pytest.param(
        "CORNER PHARMACY\n223MarketSquare\nDatum10.11.202612:41\nTea  46,48\nUSB cable  5,09\n"
        "TOTALEUR  51,57\nThank you!",
        ("CORNER PHARMACY", date(2026, 11, 10), Decimal("51.57"), "EUR"),
        id="euro-decimal-comma-time-glued-to-year",
    ),
    pytest.param(
        "METROFUELSTATION\n5 Main St\nUnleaded  $41.79\nSubtotal  $169.27\nTax8%  $13.54\n"
        "AMOUNTDUE  $182.81\nNov22,20263:05PM",
        ("METROFUELSTATION", date(2026, 11, 22), Decimal("182.81"), "USD"),
        id="us-subtotal-is-not-the-total",
    ),
    pytest.param(
        "Cafe Aurora\n14 Mar 2026\nEspresso 2.50\nCroissant 1.80\nTotal: £4.30",
        ("Cafe Aurora", date(2026, 3, 14), Decimal("4.30"), "GBP"),
        id="day-month-name-pound-sign",
    ),
    pytest.param(
        "NORTHWIND ELECTRONICS\n01/02/2026\nHeadphones 1,299.00\nUSB cable 9.99\n"
        "GRAND TOTAL CHF 1,308.99",
        ("NORTHWIND ELECTRONICS", date(2026, 2, 1), Decimal("1308.99"), "CHF"),
        id="thousands-separator-grand-total",
    ),
    pytest.param(
        "Sunrise Bakery\nMuffin 3.20\nBagel 2.10",
        ("Sunrise Bakery", None, Decimal("3.20"), None),
        id="no-total-line-largest-amount-no-date-no-currency",
    ),
    pytest.param(
        "12.50\n31/02/2026\n",
        (None, None, Decimal("12.50"), None),
        id="no-name-line-impossible-date",
    ),
    pytest.param("", (None, None, None, None), id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_receipt_fields_are_parsed_from_ocr_text(text, expected):
    fields = parse_receipt(text)
    assert (fields.merchant, fields.purchased_on, fields.total, fields.currency) == expected


@pytest.mark.parametrize(
    ("line", "amounts"),
    [
        ("Milk 2L  3.49", [Decimal("3.49")]),
        ("TOTAL 9 . 84", [Decimal("9.84")]),  # OCR spaces around the separator
        ("Date 14.03.2026", []),
        ("1.234,56 and 7,00", [Decimal("1234.56"), Decimal("7.00")]),
        ("Qty 3 x 2.5", []),
        ("$1,000.00", [Decimal("1000.00")]),
    ],
)
def test_only_two_decimal_amounts_count_and_dates_are_not_amounts(line, amounts):
    assert parse_amounts(line) == amounts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Datum18.11:2026 12:41", date(2026, 11, 18)),  # OCR read a dot as a colon
        ("at 01:02:03", None),  # a time is not a date
        ("14.03.26", date(2026, 3, 14)),
        ("Mar14,2026", date(2026, 3, 14)),
    ],
)
def test_dates_survive_ocr_confusions_but_times_are_not_dates(text, expected):
    assert parse_date(text) == expected


def test_the_first_date_on_the_receipt_wins():
    assert parse_date("Printed 2026-01-02\nPurchased 03/01/2026") == date(2026, 1, 2)
