"""The outermost safety net and a few response headers.

`CatchAllMiddleware` turns any exception nothing else handled into 500 {"detail": "internal
error"}: the trace goes to the log, never to the client. It sits inside the metrics middleware
so that such a response is still counted as a 500."""

from __future__ import annotations

import json
import logging

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
        path = str(scope.get("path", ""))

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
            if self.metrics is not None:
                self.metrics.errors.labels(code="E500").inc()
            if started:  # too late for a clean answer; the server closes the connection
                raise
            body = json.dumps({"detail": errors.INTERNAL}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"x-content-type-options", b"nosniff")]})
            await send({"type": "http.response.body", "body": body})
