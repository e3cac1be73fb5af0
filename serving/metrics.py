"""Prometheus metrics on the app's own CollectorRegistry.

Own registry, not the global default: two apps in one process (tests, or an app per worker
under a multi-app host) must not collide on metric names, and /metrics shows only ours.
Routes are labelled by their template ("/predict"), never by the raw path, so a scan of random
URLs cannot blow up the label cardinality."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sharelens_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("sharelens_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("sharelens_errors_total", "Error responses by sharelens error code",
                              ["code"], registry=r)
        self.batch_size = Histogram("sharelens_predict_batch_size", "Texts per /predict call",
                                    ["model_version"], buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("sharelens_inference_duration_seconds", "Model time per /predict call",
                                   ["model_version", "explain"], buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter("sharelens_predicted_texts_total", "Texts scored", ["model_version"], registry=r)
        self.truncated = Counter("sharelens_truncated_texts_total", "Texts longer than the model window",
                                 ["model_version"], registry=r)
        self.load_seconds = Gauge("sharelens_model_load_seconds", "Time to load and warm a model version",
                                  ["model_version"], registry=r)

    def observe_predict(self, version: str, n_texts: int, explain: bool, seconds: float, n_truncated: int) -> None:
        self.batch_size.labels(model_version=version).observe(n_texts)
        self.inference.labels(model_version=version, explain=str(explain).lower()).observe(seconds)
        self.texts.labels(model_version=version).inc(n_texts)
        if n_truncated:
            self.truncated.labels(model_version=version).inc(n_truncated)

    def observe_load(self, version: str, seconds: float) -> None:
        self.load_seconds.labels(model_version=version).set(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    if str(scope.get("path", "")).startswith("/static/"):
        return "/static"
    return "unmatched"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no body buffering, no extra task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route, method = route_label(scope), scope.get("method", "")
            self.metrics.requests.labels(route=route, method=method, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - start)
