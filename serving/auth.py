"""Who may call what: the API key, checked once for every path rather than route by route.

Why a middleware and not a FastAPI dependency: a dependency protects only the routes that
remember to declare it, while FastAPI's own /docs and /openapi.json, /metrics and any route
added later would stay open. Here the rule is one allow-list:

- public, always: the page (/ and /static/...), /healthz and /readyz (probes carry no key);
- /admin/...: a key must be configured (403 otherwise: swapping models must never be open,
  not even on a laptop) and given;
- everything else: the key when one is configured (none: open, for local use).

Unknown paths need the key too, so a scan learns nothing about which routes exist. CORS
preflights are answered by the CORS middleware outside this one, before any key is asked for.

Paths are matched as the router matches them: relative to the root path. Behind a proxy that
mounts the API under /api (`uvicorn --root-path /api`), `scope["path"]` is /api/admin/reload
while the router still routes it to /admin/reload; matching the full path left /admin open."""

from __future__ import annotations

import hmac

from starlette._utils import get_route_path  # the router's own: the guard and the routes cannot disagree
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from serving import errors
from serving.metrics import Metrics

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz"})
PUBLIC_PREFIXES = ("/static/",)
ADMIN_PREFIX = "/admin/"


def given_key(headers: Headers) -> str:
    """X-API-Key, or `Authorization: Bearer <key>`."""
    key = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


def check(path: str, headers: Headers, api_key: str | None) -> errors.ApiError | None:
    """The error to answer for this request, or None when it may go on."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    admin = path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")
    if not api_key:
        return errors.admin_disabled() if admin else None
    if not hmac.compare_digest(given_key(headers).encode(), api_key.encode()):
        return errors.unauthorized()
    return None


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str | None, metrics: Metrics | None = None) -> None:
        self.app = app
        self.api_key = api_key or None
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = check(get_route_path(scope), Headers(scope=scope), self.api_key)
            if refused is not None:
                if self.metrics is not None:
                    self.metrics.errors.labels(code=refused.code).inc()
                await errors.render(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)
