"""The outermost safety net, a few response headers, and the cap on request heads.

`CatchAllMiddleware` turns any exception nothing else handled into 500 {"detail": "internal
error", "code": "E500"}: the trace goes to the log, never to the client. It sits inside the metrics middleware
so that such a response is still counted as a 500."""

from __future__ import annotations

import json
import logging

from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import errors
from serving.metrics import Metrics

log = logging.getLogger("sharelens.serving")

# The page loads only its own files: no CDN, no inline script.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class CatchAllMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        path = get_route_path(scope)  # as routed: the page's CSP holds under a root path too

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if path == "/" or path.startswith("/static/"):
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            error = errors.internal()
            if self.metrics is not None:
                self.metrics.errors.labels(code=error.code).inc()
            if started:  # too late for a clean answer; the server closes the connection
                raise
            body = json.dumps({"detail": error.detail, "code": error.code}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"x-content-type-options", b"nosniff")]})
            await send({"type": "http.response.body", "body": body})


class HeaderLimitMiddleware:
    """431 for a request head (path, query and headers) over `limit` bytes, before any other work.

    uvicorn's own cap (h11_max_incomplete_event_size, set by serving.cli) only bounds a head that
    is still arriving: one that lands in a single read of the socket (up to 256 KiB) passes it
    whole. That cap bounds a connection's buffer; this one bounds what the app accepts."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
                len(name) + len(value) + 4 for name, value in scope.get("headers", ()))  # ": " and CRLF
            if size > self.limit:
                refused = errors.headers_too_large(self.limit)
                if self.metrics is not None:
                    self.metrics.errors.labels(code=refused.code).inc()
                await errors.render(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered like every other error (E445) instead
    of its plain-text "Disallowed CORS origin"; its CORS headers are kept."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        what = bytes(response.body).decode("utf-8", "replace").removeprefix("Disallowed CORS ")
        refused = errors.cors_refused(what)
        kept = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        rendered = errors.render(refused)
        rendered.headers.update(kept)
        return rendered
