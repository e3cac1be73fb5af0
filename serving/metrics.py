"""Prometheus metrics on the app's own CollectorRegistry.

Own registry, not the global default: two apps in one process (tests, or an app per worker
under a multi-app host) must not collide on metric names, and /metrics shows only ours.
Routes are labelled by their template ("/predict"), never by the raw path, so a scan of random
URLs cannot blow up the label cardinality.

Batcher series answer the capacity questions: how full the batches are
(`sharelens_batcher_batch_size`, `..._batch_tokens`, `..._forwards_total`), how long the backlog is
(`sharelens_queue_depth_texts`), how often clients are turned away (`sharelens_rejected_requests_total`),
and whether model swaps work (`sharelens_model_reloads_total`)."""

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
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


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
        self.batcher_texts = Histogram("sharelens_batcher_batch_size", "Texts per model call of the batcher",
                                       ["model_version"], buckets=BATCH_BUCKETS, registry=r)
        self.batcher_tokens = Histogram("sharelens_batcher_batch_tokens", "Tokenizer tokens per batch of the "
                                        "batcher", ["model_version"], buckets=TOKEN_BUCKETS, registry=r)
        self.batcher_forwards = Counter("sharelens_batcher_forwards_total", "Model calls of the batcher (a batch "
                                        "is cut into calls of similar text lengths)", ["model_version"], registry=r)
        self.batcher_seconds = Histogram("sharelens_batcher_batch_duration_seconds", "Model time per batch",
                                         ["model_version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("sharelens_queue_depth_texts", "Texts admitted and not yet answered, by queue "
                                 "(predict: the batcher; explain)", ["queue"], registry=r)
        self.rejected = Counter("sharelens_rejected_requests_total", "Requests answered 429 (queue full), "
                                "by queue", ["queue"], registry=r)
        self.reloads = Counter("sharelens_model_reloads_total", "Model reloads and promotions by target "
                               "version and result (success, failure)", ["model_version", "result"], registry=r)

    def observe_predict(self, version: str, n_texts: int, explain: bool, seconds: float, n_truncated: int) -> None:
        self.batch_size.labels(model_version=version).observe(n_texts)
        self.inference.labels(model_version=version, explain=str(explain).lower()).observe(seconds)
        self.texts.labels(model_version=version).inc(n_texts)
        if n_truncated:
            self.truncated.labels(model_version=version).inc(n_truncated)

    def observe_load(self, version: str, seconds: float) -> None:
        self.load_seconds.labels(model_version=version).set(seconds)

    def observe_batch(self, version: str, n_texts: int, tokens: int, forwards: int, seconds: float) -> None:
        self.batcher_texts.labels(model_version=version).observe(n_texts)
        self.batcher_tokens.labels(model_version=version).observe(tokens)
        self.batcher_forwards.labels(model_version=version).inc(forwards)
        self.batcher_seconds.labels(model_version=version).observe(seconds)

    def observe_depth(self, queue: str, depth: int) -> None:
        self.queue_depth.labels(queue=queue).set(depth)

    def observe_reject(self, queue: str) -> None:
        self.rejected.labels(queue=queue).inc()

    def observe_reload(self, version: str, ok: bool) -> None:
        self.reloads.labels(model_version=version, result="success" if ok else "failure").inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_label(scope: Scope, known: frozenset[str] = frozenset()) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    raw = get_route_path(scope)  # relative to the root path, as the router and the key check see it
    if raw.startswith("/static/"):
        return "/static"
    # Answered before routing (by the API key middleware): still labelled by the route when the
    # request names one of ours exactly, so a 401 on /predict is counted as /predict.
    return raw if raw in known else "unmatched"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no body buffering, no extra task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

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
            route, method = route_label(scope, self.known_paths), scope.get("method", "")
            self.metrics.requests.labels(route=route, method=method, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - start)
