"""The tier policy and the stride arithmetic (pure, no database)."""

from __future__ import annotations

import pytest

from receiptq.tiers import UNTIERED, StrideState, TierError, TierPolicy


def test_default_policy_has_three_tiers_best_first():
    policy = TierPolicy.parse("enterprise:6:0,pro:3:10,free:1:20")
    assert policy.names == ("enterprise", "pro", "free")
    assert [policy.weight(t) for t in policy.names] == [6, 3, 1]
    assert policy.effective_priority(5, "free") == 25
    assert policy.effective_priority(5, None) == 5


@pytest.mark.parametrize(
    "spec", ["", "pro:0", "pro:x", "pro:1:x", "pro,pro", "a b:1", "pro:1:2:3", "free:-1"]
)
def test_malformed_policies_are_refused(spec):
    with pytest.raises(TierError):
        TierPolicy.parse(spec)


def test_unknown_tier_names_the_known_ones():
    with pytest.raises(TierError, match="enterprise, pro, free"):
        TierPolicy.parse("enterprise,pro,free").get("platinum")


def test_classes_are_untiered_then_the_policy_then_others_seen():
    policy = TierPolicy.parse("gold:2,silver:1")
    assert policy.classes({"bronze", "gold"}) == [UNTIERED, "gold", "silver", "bronze"]


def simulate(
    weights: dict[str, float],
    backlog: dict[str, int],
    batch: int,
    claims: int,
    stride: StrideState | None = None,
) -> dict[str, int]:
    """Claims of `batch` jobs, picking smallest pass + rank / weight, as claim_jobs does."""
    stride = stride if stride is not None else StrideState()
    served = dict.fromkeys(weights, 0)
    for _ in range(claims):
        classes = list(weights)
        passes = dict(zip(classes, stride.passes_for(classes), strict=True))
        active = [c for c in classes if backlog[c] > 0]
        keys = sorted(
            (passes[c] + rank / weights[c], c)
            for c in active
            for rank in range(1, min(batch, backlog[c]) + 1)
        )[:batch]
        claimed: dict[str, int] = {}
        for _, c in keys:
            claimed[c] = claimed.get(c, 0) + 1
            backlog[c] -= 1
            served[c] += 1
        idle = [c for c in classes if c not in active]
        stride.charge(claimed, idle, weights)
    return served


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_saturated_tiers_share_claims_in_proportion_to_their_weights(batch):
    weights = {"enterprise": 6.0, "pro": 3.0, "free": 1.0}
    backlog = {"enterprise": 10**6, "pro": 10**6, "free": 10**6}
    served = simulate(weights, backlog, batch, claims=10_000 // batch)
    total = sum(served.values())
    assert served["enterprise"] / total == pytest.approx(0.6, abs=0.01)
    assert served["pro"] / total == pytest.approx(0.3, abs=0.01)
    assert served["free"] / total == pytest.approx(0.1, abs=0.01)


def test_idle_tier_gives_its_share_away_and_banks_no_credit():
    weights = {"enterprise": 6.0, "pro": 3.0, "free": 1.0}
    backlog = {"enterprise": 10**6, "pro": 10**6, "free": 0}
    stride = StrideState()
    served = simulate(weights, backlog, 8, claims=500, stride=stride)
    assert served["free"] == 0
    assert served["enterprise"] / (served["enterprise"] + served["pro"]) == pytest.approx(
        2 / 3, abs=0.01
    )
    # Free work arrives after a long idle spell: it gets its share, not a burst.
    backlog["free"] = 10**6
    first = simulate(weights, backlog, 8, claims=10, stride=stride)
    # Its share of these 80 jobs is 8; credit banked over 500 idle claims would be ~400.
    assert first["free"] <= 10, "no burst from credit banked while idle"
    later = simulate(weights, backlog, 8, claims=500, stride=stride)
    assert later["free"] / sum(later.values()) == pytest.approx(0.1, abs=0.02)


def test_a_free_job_waits_a_bounded_number_of_claims_behind_a_flood():
    """Its wait is set by the free jobs ahead of it (5 here), not by the flood of others."""
    weights = {"enterprise": 6.0, "pro": 3.0, "free": 1.0}
    backlog = {"enterprise": 10**6, "pro": 10**6, "free": 5}
    stride = StrideState()
    claims = 0
    while backlog["free"] > 0:
        simulate(weights, backlog, 1, claims=1, stride=stride)
        claims += 1
    # weights sum to 10 and free has 1: each free job costs at most ~10 claims.
    assert claims <= 5 * 10 + 1


def test_quotas_follow_the_stride_selection_and_probe_idle_classes_once():
    from receiptq.tiers import quotas

    classes = ["", "enterprise", "pro", "free"]
    weights = [6.0, 6.0, 3.0, 1.0]
    # Fresh passes, "" idle last time: 16 slots split 6:3:1 among the others.
    assert quotas(classes, [0, 0, 0, 0], weights, 16, idle={""}) == [1, 10, 5, 1]
    # free is 5 passes behind: its keys 1..5 come before the others' first (5 + 1/6),
    # then the four classes share the rest by weight.
    assert quotas(classes, [5, 5, 5, 0], weights, 16, idle=set()) == [5, 4, 2, 5]
    # Before the first claim every class counts as busy.
    assert quotas(classes, [0, 0, 0, 0], weights, 16) == [6, 6, 3, 1]
    # A busy class that loses every slot is not probed; idle classes are, once each.
    assert quotas(classes, [0, 0, 9, 9], weights, 4, idle={""}) == [1, 4, 0, 0]
