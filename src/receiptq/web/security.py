"""Who may use the dashboard: the bind rule, the access token, CSRF and host checks.

Safe by default: the dashboard binds to the loopback interface and needs no
token there. Any other bind needs ``RECEIPTQ_WEB_TOKEN``, and once a token is
set every request must carry it, as ``Authorization: Bearer <token>`` (scripts,
Prometheus) or as the cookie that ``/login?token=<token>`` sets (browsers).
Without a token, requests must name a loopback host (``Host`` header), so a web
page the operator visits cannot reach the dashboard by DNS rebinding.

Actions (retry, purge) are POSTs that also need the per-process CSRF secret
embedded in the page, in the ``X-CSRF-Token`` header, and a same-origin
request: a cross-site page can neither read the secret nor pass the checks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: The environment variable holding the access token.
TOKEN_VARIABLE = "RECEIPTQ_WEB_TOKEN"
#: The cookie a browser keeps after ``/login``.
SESSION_COOKIE = "receiptq_session"
#: The header an action must carry the CSRF secret in.
CSRF_HEADER = "x-csrf-token"
#: Paths served without the token: the platform's health check reveals nothing.
PUBLIC_PATHS = frozenset({"/healthz"})
#: Host names that are the loopback interface.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class UnsafeBindError(ValueError):
    """A bind that would expose the dashboard without a token."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, IPv6 with or without brackets) is loopback."""
    host = host.strip().strip("[]").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind beyond loopback without a token (an UnsafeBindError says why)."""
    if not is_loopback(host) and not token:
        raise UnsafeBindError(
            f"refusing to serve the dashboard on {host}: beyond 127.0.0.1 it needs an "
            f"access token. Set {TOKEN_VARIABLE} (e.g. `export {TOKEN_VARIABLE}=$(python -c "
            "'import secrets; print(secrets.token_urlsafe(32))')`), "
            "or bind to 127.0.0.1"
        )


def session_value(token: str) -> str:
    """The cookie's value: derived from the token, so the cookie is not the token itself."""
    return hmac.new(token.encode(), b"receiptq dashboard session", hashlib.sha256).hexdigest()


def is_authorized(headers: Mapping[str, str], cookies: Mapping[str, str], token: str) -> bool:
    """Whether a request carries the token (bearer header) or the session cookie."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    cookie = cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` -> ``::1``)."""
    return urlsplit(f"//{host_header}").hostname or ""


def csrf_problem(request: Request, secret: str) -> str | None:
    """Why an action request fails the CSRF checks, or None when it passes."""
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), secret.encode()):
        return "missing or wrong X-CSRF-Token header (reload the page)"
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None:
        # The scheme is not compared: behind a PaaS router the app sees http for https.
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            return f"cross-origin request refused (Origin: {origin})"
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return "actions take a JSON body (Content-Type: application/json)"
    return None


class AccessGuard:
    """ASGI middleware: the token (when set) on every request, else a loopback Host."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self.refusal(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        """The response that refuses ``request``, or None to let it through."""
        if request.url.path in PUBLIC_PATHS:
            return None
        if self.token is None:
            if is_loopback(host_name(request.headers.get("host", ""))):
                return None
            return PlainTextResponse(
                f"This dashboard has no access token, so it answers to 127.0.0.1 and "
                f"localhost only. Set {TOKEN_VARIABLE} to serve it under another name.",
                status_code=400,
            )
        if request.url.path == "/login":
            return self.login(request)
        if is_authorized(request.headers, request.cookies, self.token):
            return None
        return self.unauthorized(request)

    def login(self, request: Request) -> Response:
        assert self.token is not None
        given = request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("wrong or missing token", status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(self.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def unauthorized(self, request: Request) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="receiptq"'}
        message = (
            "this dashboard needs its access token: open /login?token=<RECEIPTQ_WEB_TOKEN> "
            "once in the browser, or send Authorization: Bearer <token>"
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=401, headers=headers)
        return PlainTextResponse(message, status_code=401, headers=headers)
