"""Match a receipt to one of its owner's bank transactions (pure scoring).

A transaction is a candidate when its currency is the receipt's (or the receipt
shows none), its amount is within :data:`DEFAULT_AMOUNT_TOLERANCE` of the total
and it was posted in the date window (banks post a card payment on the day or a
few days later). Candidates are scored on amount, date and merchant similarity
(rapidfuzz, from the ``receipts`` extra, imported on first use; on names
squeezed to letters and digits since OCR and bank descriptions space words
differently). The best score at or above
:data:`DEFAULT_MIN_SCORE` wins; equal scores go to the earlier posting, then
the lower transaction id, so a rerun picks the same one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from receiptq.extras import import_optional

#: Largest difference between the receipt total and the transaction amount.
DEFAULT_AMOUNT_TOLERANCE = Decimal("0.05")
#: Posting window around the receipt date, in days (before, after).
DEFAULT_DAYS_BEFORE = 1
DEFAULT_DAYS_AFTER = 5
#: The lowest score that counts as a match (0..1).
DEFAULT_MIN_SCORE = 0.6
#: Weights of the amount, date and merchant parts of the score (they sum to 1).
WEIGHTS = (0.45, 0.2, 0.35)


@dataclass(frozen=True)
class ReceiptFacts:
    """What matching needs from a read receipt."""

    merchant: str | None
    purchased_on: date | None
    total: Decimal | None
    currency: str | None


@dataclass(frozen=True)
class Transaction:
    id: int
    posted_on: date
    amount: Decimal
    currency: str
    description: str


@dataclass(frozen=True)
class MatchResult:
    """The chosen transaction and its score, or None and the reason there is none."""

    transaction_id: int | None
    score: float
    reason: str | None

    @property
    def matched(self) -> bool:
        return self.transaction_id is not None


@dataclass(frozen=True)
class MatchRules:
    amount_tolerance: Decimal = DEFAULT_AMOUNT_TOLERANCE
    days_before: int = DEFAULT_DAYS_BEFORE
    days_after: int = DEFAULT_DAYS_AFTER
    min_score: float = DEFAULT_MIN_SCORE


DEFAULT_RULES = MatchRules()


def squeeze(name: str) -> str:
    """Upper-case letters and digits only."""
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def merchant_similarity(receipt_merchant: str | None, description: str) -> float:
    """0..1: how well the receipt's merchant appears in the bank description."""
    if not receipt_merchant:
        return 0.0
    fuzz = import_optional("rapidfuzz.fuzz", "receipts", "matching merchants")
    return fuzz.partial_ratio(squeeze(receipt_merchant), squeeze(description)) / 100


def rejection(receipt: ReceiptFacts, txn: Transaction, rules: MatchRules) -> str | None:
    """Why this transaction cannot be the receipt's, or None when it is a candidate."""
    assert receipt.total is not None and receipt.purchased_on is not None
    if receipt.currency is not None and txn.currency != receipt.currency:
        return "currency mismatch"
    if abs(txn.amount - receipt.total) > rules.amount_tolerance:
        return "amount differs"
    earliest = receipt.purchased_on - timedelta(days=rules.days_before)
    latest = receipt.purchased_on + timedelta(days=rules.days_after)
    if not earliest <= txn.posted_on <= latest:
        return "outside the date window"
    return None


def score(receipt: ReceiptFacts, txn: Transaction, rules: MatchRules = DEFAULT_RULES) -> float:
    """0..1 for a candidate transaction (see :func:`rejection`)."""
    assert receipt.total is not None and receipt.purchased_on is not None
    tolerance = float(rules.amount_tolerance) or 1.0
    amount = 1.0 - float(abs(txn.amount - receipt.total)) / tolerance / 2
    days = abs((txn.posted_on - receipt.purchased_on).days)
    when = 1.0 - days / (max(rules.days_before, rules.days_after) + 1)
    merchant = merchant_similarity(receipt.merchant, txn.description)
    w_amount, w_date, w_merchant = WEIGHTS
    return round(w_amount * amount + w_date * when + w_merchant * merchant, 6)


def best_match(
    receipt: ReceiptFacts, transactions: Iterable[Transaction], rules: MatchRules = DEFAULT_RULES
) -> MatchResult:
    """The receipt's transaction, or why none is."""
    if receipt.total is None:
        return MatchResult(None, 0.0, "the total could not be read")
    if receipt.purchased_on is None:
        return MatchResult(None, 0.0, "the date could not be read")
    reasons: dict[str, int] = {}
    scored: list[tuple[float, date, int]] = []
    for txn in transactions:
        why = rejection(receipt, txn, rules)
        if why is None:
            scored.append((score(receipt, txn, rules), txn.posted_on, txn.id))
        else:
            reasons[why] = reasons.get(why, 0) + 1
    if not scored:
        return MatchResult(None, 0.0, _no_candidate_reason(receipt, reasons))
    # Highest score; among equal scores the earlier posting, then the lower id.
    best_score, _, best_id = min(scored, key=lambda s: (-s[0], s[1], s[2]))
    if best_score < rules.min_score:
        return MatchResult(
            None, best_score, f"best candidate scored {best_score:.2f} < {rules.min_score:.2f}"
        )
    return MatchResult(best_id, best_score, None)


def _no_candidate_reason(receipt: ReceiptFacts, reasons: dict[str, int]) -> str:
    what = f"{receipt.total} {receipt.currency or ''}".strip()
    if not reasons:
        return f"no bank transaction to match {what} against"
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return f"no bank transaction matches {what} on {receipt.purchased_on} ({detail})"
