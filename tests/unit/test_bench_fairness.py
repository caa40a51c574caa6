"""The tiers workload's fairness cost: rounds whose pairs take turns going first."""

from __future__ import annotations

from receiptq.tools.bench.workloads import fairness_cost, round_cost


def test_a_round_costs_what_the_fair_drain_lost_against_the_plain_one():
    assert round_cost(10_000, 9_500) == 5.0
    assert round_cost(10_000, 10_400) == -4.0


def test_the_second_drain_s_handicap_cancels_out_of_an_odd_number_of_rounds():
    """A true cost of 5 %, and the drain that runs second 12 points slower: the rounds
    with plain first show 17, those with fair first -7. Their plain median (4 of 7
    rounds plain first) would say 17; the mean of the two orders says 5."""
    costs = [17.0, -7.0, 17.0, -7.0, 17.0, -7.0, 17.0]
    assert fairness_cost(costs) == 5.0


def test_one_round_is_its_own_cost():
    assert fairness_cost([3.5]) == 3.5
