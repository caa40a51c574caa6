"""The dashboard's JSON API: the monitor's figures, dead-letter actions, access rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from receiptq import cli, db, monitor
from receiptq.web import security
from receiptq.web.app import parse_ids
from receiptq.web.sampler import DepthSampler
from web_helpers import LOCAL, client, csrf_token, fill_known_contents


@pytest.fixture
def known(broker, conn):
    return fill_known_contents(broker, conn)


def dead_letter_ids(conn, actor=None):
    rows = db.fetch_all(conn, "dead_letter_list", {"actor": actor, "queue": None, "limit": 100})
    return sorted(row["id"] for row in rows)


# -- figures ------------------------------------------------------------------------------


def test_api_status_is_exactly_the_monitor_snapshot(database_url, conn, known):
    with client(database_url, clock=lambda: known["now"]) as web:
        served = web.get("/api/status").json()
    expected = json.loads(json.dumps(monitor.snapshot(conn, now=known["now"])))
    assert served == expected
    assert served["totals"]["queued"] == 4 and served["totals"]["dead"] == 3


def test_api_running_lists_the_running_and_the_reserved_jobs_apart(database_url, known):
    with client(database_url) as web:
        served = web.get("/api/running").json()
    assert served["counts"] == {"running": 1, "reserved": 1}
    (running,) = served["running"]
    (reserved,) = served["reserved"]
    assert (running["actor"], running["args"]) == ("send_email", "'b@example.com'")
    assert running["started_at"] is not None and reserved["started_at"] is None
    assert reserved["args"] == "'r@example.com'"


def test_api_dashboard_has_status_actors_tiers_and_history(database_url, conn, known):
    now = known["now"]
    with client(database_url, clock=lambda: now) as web:
        data = web.get("/api/dashboard").json()
    assert data["status"] == json.loads(json.dumps(monitor.snapshot(conn, now=now)))
    ocr = data["actors"]["ocr_receipt"]
    assert (ocr["done_5m"], ocr["failed_5m"]) == (8, 2)
    assert ocr["success_rate_5m"] == pytest.approx(0.8)
    assert ocr["run_p50_ms"] == pytest.approx(4.0)  # 10 runs in the (3, 5] ms bucket
    assert data["actors"]["send_email"]["done_5m"] == 5
    tiers = {t["tier"]: t for t in data["tiers"]}
    free = tiers["free"]
    assert (tiers["pro"]["queued"], free["queued"], free["running"], free["reserved"]) == (
        3,
        1,
        1,
        1,
    )
    assert tiers[None]["scheduled"] == 1
    assert tiers["pro"]["ready_share"] == pytest.approx(0.75)
    assert len(data["history"]) == monitor.HISTORY_MIN + 1
    assert sum(m["done"] for m in data["history"]) == 113
    # The sampler takes its first sample as the app starts.
    assert [sample["totals"]["queued"] for sample in data["depth"]] == [4]
    assert data["sample_interval_s"] == 60.0


def test_depth_sampler_keeps_the_snapshot_depths(database_url, known):
    pool = db.open_pool(database_url, max_size=1)
    try:
        sampler = DepthSampler(pool, interval_s=60)
        sampler.sample()
        sampler.sample()
    finally:
        pool.close()
    samples = sampler.history()
    assert len(samples) == 2
    assert samples[-1]["queues"]["ocr"] == {
        "queued": 3,
        "scheduled": 1,
        "running": 0,
        "reserved": 0,
        "dead": 0,
    }
    assert samples[-1]["totals"]["dead"] == 3


def test_minute_history_fills_missing_minutes_with_zero():
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        {"minute": minute, "succeeded": 3, "failed": 1},
        {"minute": minute, "succeeded": 2, "failed": 0},
        {"minute": minute - timedelta(minutes=3), "succeeded": 7, "failed": 2},
        {"minute": minute - timedelta(minutes=9), "succeeded": 99, "failed": 9},
    ]
    history = monitor.minute_history(rows, now, minutes=5)
    assert [(m["done"], m["failed"]) for m in history] == [
        (0, 0), (0, 0), (7, 2), (0, 0), (0, 0), (5, 1),
    ]  # fmt: skip
    assert history[-1]["minute"] == minute.isoformat()


def test_tier_share_is_none_when_nothing_is_ready():
    rows = [
        {
            "tier": "pro",
            "queued": 0,
            "scheduled": 2,
            "running": 1,
            "reserved": 0,
            "oldest_ready_s": None,
        }
    ]
    assert monitor.tier_figures(rows)[0]["ready_share"] is None


# -- dead letters -------------------------------------------------------------------------


def test_dead_letter_search_matches_actor_and_error_text(database_url, known):
    with client(database_url) as web:
        everything = web.get("/api/dead-letters").json()["dead_letters"]
        by_actor = web.get("/api/dead-letters", params={"actor": "OCR"}).json()["dead_letters"]
        by_error = web.get("/api/dead-letters", params={"error": "mailbox"}).json()["dead_letters"]
        by_type = web.get("/api/dead-letters", params={"error": "timeouterror"}).json()
        both = web.get("/api/dead-letters", params={"actor": "send", "error": "timed out"}).json()
        bad_limit = web.get("/api/dead-letters", params={"limit": "0"})
    assert len(everything) == 3
    assert {r["actor"] for r in by_actor} == {"ocr_receipt"} and len(by_actor) == 2
    assert [r["actor"] for r in by_error] == ["send_email"]
    assert len(by_type["dead_letters"]) == 2
    assert both["dead_letters"] == []
    assert bad_limit.status_code == 400


def test_retry_puts_the_dead_letter_back_as_a_job(database_url, conn, known):
    target = dead_letter_ids(conn, "send_email")[0]
    with client(database_url) as web:
        response = web.post(
            "/api/dead-letters/retry",
            json={"ids": [target, 999_999]},
            headers={"X-CSRF-Token": csrf_token(web)},
        )
    assert response.status_code == 200
    assert response.json() == {"retried": [target], "skipped": [999_999]}
    assert target not in dead_letter_ids(conn)
    assert monitor.snapshot(conn)["queues"]["doomed_email"]["queued"] == 1


def test_purge_deletes_the_dead_letters(database_url, conn, known):
    targets = dead_letter_ids(conn, "ocr_receipt")
    with client(database_url) as web:
        response = web.post(
            "/api/dead-letters/purge",
            json={"ids": targets},
            headers={"X-CSRF-Token": csrf_token(web)},
        )
    assert response.json() == {"purged": targets, "skipped": []}
    assert len(dead_letter_ids(conn)) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": ["1"]}, {"ids": [0]}, {"ids": [True]}, [1, 2], {"ids": 3}],
)
def test_malformed_action_body_is_refused(body):
    with pytest.raises(ValueError):
        parse_ids(body)


def test_malformed_action_is_a_400_and_changes_nothing(database_url, conn, known):
    before = dead_letter_ids(conn)
    with client(database_url) as web:
        token = csrf_token(web)
        not_json = web.post(
            "/api/dead-letters/purge",
            content=b"{ids: 1",
            headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
        )
        no_ids = web.post("/api/dead-letters/purge", json={}, headers={"X-CSRF-Token": token})
    assert (not_json.status_code, no_ids.status_code) == (400, 400)
    assert "ids" in no_ids.json()["error"]
    assert dead_letter_ids(conn) == before


# -- CSRF ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({"X-CSRF-Token": None}, "X-CSRF-Token"),
        ({"X-CSRF-Token": "guess"}, "X-CSRF-Token"),
        ({"Origin": "https://evil.example"}, "cross-origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({"Content-Type": "text/plain"}, "JSON"),
    ],
)
def test_action_failing_a_csrf_check_is_refused_and_changes_nothing(
    database_url, conn, known, headers, reason
):
    before = dead_letter_ids(conn)
    with client(database_url) as web:
        base = {"X-CSRF-Token": csrf_token(web), "Content-Type": "application/json"}
        sent = {key: value for key, value in {**base, **headers}.items() if value is not None}
        response = web.post(
            "/api/dead-letters/purge", content=json.dumps({"ids": before}), headers=sent
        )
    assert response.status_code == 403
    assert reason in response.json()["error"]
    assert dead_letter_ids(conn) == before


def test_same_origin_action_with_the_token_passes(database_url, conn, known):
    with client(database_url) as web:
        headers = {
            "X-CSRF-Token": csrf_token(web),
            "Origin": LOCAL,
            "Sec-Fetch-Site": "same-origin",
        }
        response = web.post(
            "/api/dead-letters/purge", json={"ids": dead_letter_ids(conn)}, headers=headers
        )
    assert response.status_code == 200
    assert dead_letter_ids(conn) == []


def test_actions_are_post_only(database_url, known):
    with client(database_url) as web:
        assert web.get("/api/dead-letters/purge").status_code == 405


def test_each_process_has_its_own_csrf_secret(database_url):
    with client(database_url) as first, client(database_url) as second:
        assert csrf_token(first) != csrf_token(second)


# -- access -------------------------------------------------------------------------------


def test_without_token_only_loopback_host_names_are_served(database_url):
    with client(database_url) as web:
        assert web.get("/api/status").status_code == 200
        assert web.get("/api/status", headers={"Host": "localhost:8000"}).status_code == 200
        assert web.get("/api/status", headers={"Host": "[::1]:8000"}).status_code == 200
        rebound = web.get("/api/status", headers={"Host": "attacker.example"})
    assert rebound.status_code == 400
    assert security.TOKEN_VARIABLE in rebound.text


def test_with_a_token_every_request_needs_it(database_url):
    token = "s3cret-token"
    with client(database_url, token=token) as web:
        for path in ("/", "/api/status", "/api/dashboard", "/metrics", "/static/dashboard.js"):
            assert web.get(path).status_code == 401, path
        assert web.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert web.get("/api/status", headers=bearer).status_code == 200
        assert web.get("/metrics", headers=bearer).status_code == 200
        # Any Host is fine with a token (the PaaS router's name).
        named = {**bearer, "Host": "receiptq.example.com"}
        assert web.get("/api/status", headers=named).status_code == 200
        assert web.get("/healthz").status_code == 200


def test_login_sets_a_session_cookie_that_opens_the_dashboard(database_url):
    token = "s3cret-token"
    with client(database_url, token=token) as web:
        assert web.get("/login", params={"token": "wrong"}).status_code == 401
        assert web.get("/").status_code == 401
        login = web.get("/login", params={"token": token}, follow_redirects=False)
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert token not in cookie
        web.cookies.set(security.SESSION_COOKIE, login.cookies[security.SESSION_COOKIE])
        assert web.get("/").status_code == 200
        assert web.get("/api/status").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.1.1"])
def test_loopback_binds_need_no_token(host):
    security.check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_binding_beyond_loopback_without_a_token_is_refused(host):
    with pytest.raises(security.UnsafeBindError, match=security.TOKEN_VARIABLE):
        security.check_bind(host, None)
    security.check_bind(host, "a-token")


def test_web_command_refuses_a_public_bind_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv(security.TOKEN_VARIABLE, raising=False)
    assert cli.main(["web", "--host", "0.0.0.0", "--port", "8123"]) == cli.EXIT_USAGE
    assert "RECEIPTQ_WEB_TOKEN" in capsys.readouterr().err


def test_web_command_refuses_a_bad_port(capsys):
    assert cli.main(["web", "--port", "70000"]) == cli.EXIT_USAGE
    assert "invalid port" in capsys.readouterr().err


def test_page_cannot_be_framed_and_serves_the_vendored_chart_library(database_url):
    with client(database_url) as web:
        page = web.get("/")
        script = web.get("/static/uPlot.iife.min.js")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "/static/uPlot.iife.min.js" in page.text and "https://" not in page.text
    assert script.status_code == 200 and "uPlot" in script.text
