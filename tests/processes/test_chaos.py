"""The chaos run at a size that fits CI: real `dramatiq` workers SIGKILLed every few
seconds, PostgreSQL (a server of the test's own) restarted twice under them."""

from __future__ import annotations

import pytest

from receiptq.tools.chaos.run import ChaosSettings, run_chaos

SETTINGS = ChaosSettings(
    jobs=2000,
    invocations=2,
    processes=1,
    threads=4,
    lease_s=4.0,
    kill_every_s=(2.0, 4.0),
    min_kills=4,
    restarts=("fast", "immediate"),
    outage_s=2.0,
    timeout_s=180.0,
)
#: A job its killed worker held must run again within its lease, one rescue interval
#: (the heartbeat: a third of the lease), and a few seconds for a worker to claim it.
RERUN_BOUND_S = SETTINGS.lease_s + SETTINGS.lease_s / 3 + 6


@pytest.mark.timeout(400)
def test_killed_workers_and_database_restarts_lose_nothing_and_rerun_held_jobs_promptly(
    tmp_path,
):
    outcome = run_chaos(SETTINGS, tmp_path).summary()
    said = f"{outcome} (logs in {tmp_path})"
    assert outcome["finished"], f"the drain did not finish: {said}"
    assert outcome["lost"] == 0, said
    assert outcome["dead_lettered"] == 0, said
    assert outcome["deadlocks"] == 0, f"PostgreSQL logged a deadlock: {said}"
    assert outcome["most_held"] <= outcome["prefetch"], said
    assert outcome["kills"] >= SETTINGS.min_kills, said
    assert outcome["kill_to_rerun_s"]["jobs"] > 0, f"no kill hit a worker holding jobs: {said}"
    assert outcome["kill_to_rerun_s"]["max"] <= RERUN_BOUND_S, said
