"""Scoring receipts against bank transactions (pure, on a table of cases)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from receiptq.services.matching import (
    MatchRules,
    ReceiptFacts,
    Transaction,
    best_match,
    merchant_similarity,
)

DAY = date(2026, 3, 14)
RECEIPT = ReceiptFacts("GREENGROCERMARKET", DAY, Decimal("23.40"), "EUR")


def txn(id, days=0, amount="23.40", currency="EUR", description="GREEN GROCER MARKET LONDON"):
    return Transaction(id, DAY + timedelta(days=days), Decimal(amount), currency, description)


CASES = [
    pytest.param(RECEIPT, [txn(1)], 1, None, id="exact"),
    pytest.param(
        RECEIPT, [txn(1, description="SHELL 123"), txn(2)], 2, None, id="merchant-decides"
    ),
    pytest.param(RECEIPT, [txn(1, days=4), txn(2, days=1)], 2, None, id="closer-date-wins"),
    pytest.param(RECEIPT, [txn(1, amount="23.44")], 1, None, id="amount-within-tolerance"),
    pytest.param(RECEIPT, [txn(1, amount="23.46")], None, "1 amount differs", id="amount-outside"),
    pytest.param(RECEIPT, [txn(1, days=-2)], None, "1 outside the date window", id="too-early"),
    pytest.param(RECEIPT, [txn(1, days=6)], None, "outside the date window", id="too-late"),
    pytest.param(RECEIPT, [txn(1, currency="USD")], None, "1 currency mismatch", id="currency"),
    pytest.param(
        ReceiptFacts("GREENGROCERMARKET", DAY, Decimal("23.40"), None),
        [txn(1, currency="USD")],
        1,
        None,
        id="unknown-currency-matches-any",
    ),
    pytest.param(RECEIPT, [txn(7), txn(3)], 3, None, id="tie-goes-to-lower-id"),
    pytest.param(RECEIPT, [txn(7, days=2), txn(3, days=2)], 3, None, id="tie-same-day-lower-id"),
    pytest.param(
        RECEIPT,
        [txn(1, days=5, amount="23.45", description="ACME FUEL")],
        None,
        "best candidate scored",
        id="weak-candidate-below-min-score",
    ),
    pytest.param(RECEIPT, [], None, "no bank transaction to match", id="no-transactions"),
    pytest.param(
        ReceiptFacts("X", DAY, None, "EUR"),
        [txn(1)],
        None,
        "total could not be read",
        id="no-total",
    ),
    pytest.param(
        ReceiptFacts("X", None, Decimal("1.00"), "EUR"),
        [txn(1)],
        None,
        "date could not be read",
        id="no-date",
    ),
]


@pytest.mark.parametrize(("receipt", "transactions", "expected_id", "reason"), CASES)
def test_best_match_picks_the_right_transaction_or_says_why_not(
    receipt, transactions, expected_id, reason
):
    result = best_match(receipt, transactions)
    assert result.transaction_id == expected_id
    if expected_id is None:
        assert reason in result.reason
    else:
        assert result.reason is None
        assert 0.6 <= result.score <= 1.0


def test_a_tie_is_broken_by_the_earlier_posting_before_the_id():
    # Same score: equal amount and merchant, one day before vs one day after.
    early, late = txn(9, days=-1), txn(2, days=1)
    assert best_match(RECEIPT, [late, early]).transaction_id == 9


def test_exact_match_scores_higher_than_a_near_one():
    exact = best_match(RECEIPT, [txn(1)]).score
    near = best_match(RECEIPT, [txn(1, days=3, amount="23.43")]).score
    assert exact > near


def test_rules_can_widen_the_tolerance():
    rules = MatchRules(amount_tolerance=Decimal("1.00"))
    assert best_match(RECEIPT, [txn(1, amount="24.00")], rules).transaction_id == 1


@pytest.mark.parametrize(
    ("merchant", "description", "at_least", "below"),
    [
        ("GREENGROCERMARKET", "CARD GREEN GROCER MARKET LDN", 0.99, 1.01),
        ("Cafe Aurora", "CAFE AURORA 0231", 0.99, 1.01),
        ("Cafe Aurora", "METRO FUEL STATION 44", 0.0, 0.5),
        (None, "ANYTHING", 0.0, 0.01),
    ],
)
def test_merchant_similarity_ignores_spacing_and_case(merchant, description, at_least, below):
    assert at_least <= merchant_similarity(merchant, description) < below
