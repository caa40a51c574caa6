"""The soak's verdicts (pure) and a short soak on a PostgreSQL of its own."""

from __future__ import annotations

import json

import psycopg
import pytest

from receiptq.tools.soak import run as soak
from receiptq.tools.soak.run import Series, SoakSettings, judge


def points(values: list[float], step_min: float = 0.5) -> list[tuple[float, float]]:
    return [(i * step_min, v) for i, v in enumerate(values)]


def test_a_level_that_stays_put_after_the_warm_up_is_flat():
    rss = Series("worker 1 RSS", "MB", 2.0)
    ramp_then_flat = [30 + min(i, 20) for i in range(120)]  # warms up for 10 minutes
    verdict = judge(rss, points(ramp_then_flat), warmup_min=12)
    assert verdict["verdict"] == "flat"
    assert verdict["start"] == 30 and verdict["end"] == 50


def test_a_level_that_keeps_climbing_grows():
    size = Series("jobs size", "MiB", 1.0)
    leak = [2 + 0.1 * i for i in range(120)]  # 12 MiB an hour
    verdict = judge(size, points(leak), warmup_min=12)
    assert verdict["verdict"] == "grows"
    assert verdict["slope_per_h"] == pytest.approx(12, rel=0.01)


def test_a_small_rise_under_the_floor_is_flat():
    conns = Series("connections", "conns", 2)
    verdict = judge(conns, points([22] * 60 + [23] * 60), warmup_min=12)
    assert verdict["verdict"] == "flat"


def test_a_cumulative_series_is_judged_on_its_rate():
    rows = Series("stats_minute rows", "rows", 500, cumulative=True)
    steady = [3 * i for i in range(120)]  # 6 rows a minute, for ever: by design
    assert judge(rows, points(steady), warmup_min=12)["verdict"] == "flat"
    speeding_up = [i * i * 10 for i in range(120)]
    assert judge(rows, points(speeding_up), warmup_min=12)["verdict"] == "grows"


def test_the_database_must_be_a_soak_one():
    with pytest.raises(SystemExit, match="soak_"):
        soak.database_url("postgresql://postgres@127.0.0.1/postgres", "receiptq")


def test_a_short_soak_samples_every_table_and_drops_its_database(tmp_path):
    settings = SoakSettings(minutes=0.4, rate=30, sample_s=4, retention_s=10, warmup_minutes=0.1)
    soak.run_on_scratch_server(settings, tmp_path)
    samples = soak.read_samples(tmp_path)
    assert len(samples) >= 5
    last = samples[-1]
    assert len(last["rss_mb"]) == settings.processes
    assert last["succeeded"] > 300 and last["dead_letters"] > 0
    assert last["tables"]["results"]["live"] > 0
    assert {"jobs", "dead_letters", "stats_minute", "workers", "results"} <= set(last["tables"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {row["series"] for row in summary} >= {"worker 1 RSS", "jobs size", "connections"}
    assert (tmp_path / "soak.png").stat().st_size < 150_000
    assert json.loads((tmp_path / "server.json").read_text())["autovacuum"] == "on"


def test_a_soak_on_a_given_server_leaves_no_database_behind(tmp_path, pg_admin_url):
    server = pg_admin_url
    name = f"soak_t_{tmp_path.name[-8:]}".replace("-", "_").lower()
    settings = SoakSettings(minutes=0.15, rate=20, sample_s=3, database=name)
    soak.run(settings, server, tmp_path)
    assert soak.read_samples(tmp_path)[-1]["succeeded"] > 0, "ran on an earlier run's database"
    with psycopg.connect(server) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert left == []
