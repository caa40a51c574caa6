"""The dashboard's ASGI app: one page, a JSON API over the monitor's figures, /metrics.

Routes::

    GET  /                          the page (refreshes itself by polling the API)
    GET  /api/status                exactly ``receiptq status --json``
    GET  /api/dashboard             {"status", "actors", "tiers", "history", "depth"}
    GET  /api/running               the jobs running and reserved (as ``receiptq top --json``)
    GET  /api/dead-letters          ?actor=&error=&limit= (substring search)
    POST /api/dead-letters/retry    {"ids": [...]}: queue them again
    POST /api/dead-letters/purge    {"ids": [...]}: delete them
    GET  /metrics                   Prometheus text format
    GET  /healthz                   200 when the database answers (no token needed)

The figures are :mod:`receiptq.monitor`'s; this module only serves them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from receiptq import claimed_jobs, db, dead_letters, jsonable, monitor
from receiptq.web.metrics import PostgresCollector
from receiptq.web.sampler import DEFAULT_SAMPLE_INTERVAL_S, DepthSampler
from receiptq.web.security import AccessGuard, csrf_problem

STATIC = Path(str(resources.files("receiptq.web") / "static"))
#: Connections the web process holds at most (page, API, scrapes, sampler).
POOL_SIZE = 4
#: Dead letters one action may name, and the most one search returns.
MAX_IDS = 1000
DEFAULT_SEARCH_LIMIT = 100
#: The page runs only its own scripts and cannot be framed (no clickjacking of the
#: buttons); the referrer never carries a /login token.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

Clock = Callable[[], datetime | None]


class JSON(JSONResponse):
    """JSON with datetimes as ISO text."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=jsonable.default, separators=(",", ":")).encode()


def _error(message: str, status: int) -> JSON:
    return JSON({"error": message}, status_code=status)


def parse_ids(body: Any) -> list[int]:
    """The ``ids`` of an action body; ValueError with the reason when malformed."""
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        raise ValueError('expected a JSON object {"ids": [1, 2, ...]} with at least one id')
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids per request")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise ValueError("ids must be whole numbers >= 1")
    return ids


def parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_SEARCH_LIMIT
    limit = int(text)
    if not 1 <= limit <= MAX_IDS:
        raise ValueError(f"limit must be between 1 and {MAX_IDS}")
    return limit


def create_app(
    url: str,
    *,
    token: str | None = None,
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
    clock: Clock = lambda: None,
) -> Starlette:
    """The dashboard over the database at ``url``.

    ``token``: the access token every request needs (None: loopback only).
    ``clock`` (tests) returns the ``now`` the figures are computed at (None: the
    database's clock).
    """
    csrf_secret = secrets.token_urlsafe(32)
    page = (STATIC / "index.html").read_text().replace("{{csrf_token}}", csrf_secret)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await run_in_threadpool(db.open_pool, url, max_size=POOL_SIZE, name="receiptq-web")
        sampler = DepthSampler(pool, interval_s=sample_interval_s)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PostgresCollector(pool))
        state.update(pool=pool, sampler=sampler, registry=registry)
        await run_in_threadpool(sampler.start)
        try:
            yield
        finally:
            sampler.stop()
            pool.close()

    def read(function: Callable[..., Any], *args: Any) -> Any:
        with state["pool"].connection() as conn:
            return function(conn, *args)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def api_status(request: Request) -> Response:
        return JSON(await run_in_threadpool(read, _status, clock()))

    async def api_dashboard(request: Request) -> Response:
        figures = await run_in_threadpool(read, _dashboard, clock())
        figures["depth"] = state["sampler"].history()
        figures["sample_interval_s"] = sample_interval_s
        return JSON(figures)

    async def api_running(request: Request) -> Response:
        return JSON(await run_in_threadpool(read, claimed_jobs.claimed_jobs))

    async def api_dead_letters(request: Request) -> Response:
        try:
            limit = parse_limit(request.query_params.get("limit"))
        except ValueError as exc:
            return _error(str(exc), 400)
        actor = request.query_params.get("actor") or None
        error = request.query_params.get("error") or None
        rows = await run_in_threadpool(
            read, lambda conn: dead_letters.search(conn, actor=actor, error=error, limit=limit)
        )
        return JSON({"dead_letters": rows})

    async def action(
        request: Request, act: Callable[..., list[int]]
    ) -> tuple[list[int], list[int]] | Response:
        """Retry or purge the dead letters a request names: (done, skipped)."""
        problem = csrf_problem(request, csrf_secret)
        if problem is not None:
            return _error(problem, 403)
        try:
            ids = parse_ids(await request.json())
        except ValueError as exc:  # includes malformed JSON
            return _error(str(exc), 400)
        done = await run_in_threadpool(read, lambda conn: act(conn, ids=ids))
        return done, sorted(set(ids) - set(done))

    async def api_retry(request: Request) -> Response:
        outcome = await action(request, dead_letters.retry)
        if isinstance(outcome, Response):
            return outcome
        return JSON({"retried": outcome[0], "skipped": outcome[1]})

    async def api_purge(request: Request) -> Response:
        outcome = await action(request, dead_letters.purge)
        if isinstance(outcome, Response):
            return outcome
        return JSON({"purged": outcome[0], "skipped": outcome[1]})

    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(generate_latest, state["registry"])
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        await run_in_threadpool(read, monitor.db_now)
        return JSON({"ok": True})

    routes = [
        Route("/", index),
        Route("/api/status", api_status),
        Route("/api/dashboard", api_dashboard),
        Route("/api/running", api_running),
        Route("/api/dead-letters", api_dead_letters),
        Route("/api/dead-letters/retry", api_retry, methods=["POST"]),
        Route("/api/dead-letters/purge", api_purge, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(AccessGuard, token=token)], lifespan=lifespan
    )


def _status(conn: Any, now: datetime | None) -> dict[str, Any]:
    return monitor.snapshot(conn, now=now)


def _dashboard(conn: Any, now: datetime | None) -> dict[str, Any]:
    return monitor.dashboard(conn, now=now)
