"""Prometheus metrics on the app's own CollectorRegistry.

Own registry, not the global default: two apps in one process (tests, or an app per worker
under a multi-app host) must not collide on metric names, and /metrics shows only ours.
Routes are labelled by their template ("/predict"), never by the raw path, so a scan of random
URLs cannot blow up the label cardinality.

Batcher series answer the capacity questions: how full the batches are
(`sharelens_batcher_batch_size`, `..._batch_tokens`, `..._forwards_total`), how long the backlog is
(`sharelens_queue_depth_texts`), how often clients are turned away (`sharelens_rejected_requests_total`),
and whether model swaps work (`sharelens_model_reloads_total`).

Several worker processes (SHARELENS_WORKERS > 1): prometheus_client's multiprocess mode. `serve`
gives the workers a fresh PROMETHEUS_MULTIPROC_DIR before uvicorn starts them (`multiprocess_dir`);
each process writes its values to its own files there, and /metrics, whichever worker answers it,
renders all of them through a `MultiProcessCollector`: counters and histograms summed over the
workers (also over workers that have exited: a counter never goes back), queue depths summed over
the live ones, load times the slowest worker's. Two series stay per process (label `pid`, live
workers only): `sharelens_process_http_requests` and `sharelens_model_serving`, so that a scrape
shows whether every worker answers and serves the same version. With one worker nothing of this
applies: values live in this process's memory, as before."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")

log = logging.getLogger("sharelens.serving")


def multiprocess_active() -> str | None:
    """The multiprocess directory when this process writes its metrics there, else None.

    prometheus_client decides once, when it is imported: PROMETHEUS_MULTIPROC_DIR set then means
    values in files. A variable set later changes nothing, and reading the directory then would
    show nothing of this process: so both must hold."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and getattr(values.ValueClass, "_multiprocess", False) else None


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[Path | None]:
    """Around the whole server run, in the parent, before any worker starts: with several workers,
    a fresh, empty PROMETHEUS_MULTIPROC_DIR that the workers inherit, removed when the server has
    stopped. A directory the operator names in PROMETHEUS_MULTIPROC_DIR is used instead (even
    with one worker), emptied of the previous run's files at start (the documented rule: files of
    dead processes would be counted again) and left in place. With one worker and no such
    variable: nothing (values stay in memory)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield path
        return
    if workers <= 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="sharelens-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)  # spawned workers inherit it and import prometheus_client with it
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def forget_dead_processes(path: str | Path) -> list[int]:
    """mark_process_dead for every process with live-gauge files that is no longer running (a
    worker that crashed, and that uvicorn replaced): its queue depth and per-process series must
    not be shown as if it still ran. Returns those pids."""
    dead = sorted({int(m[1]) for f in os.listdir(path) if (m := _LIVE_FILE.fullmatch(f))} - {os.getpid()})
    dead = [pid for pid in dead if not _running(pid)]
    for pid in dead:
        mark_process_dead(pid, str(path))
    return dead


class Metrics:
    def __init__(self, multiprocess: str | Path | None = None) -> None:
        """`multiprocess`: the PROMETHEUS_MULTIPROC_DIR to render from (`multiprocess_active()` in
        a server; None: this process's own values only)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # What /metrics renders. In multiprocess mode the metrics below still register on
        # self.registry (names must stay unique per app) but are read back from the files: a
        # registry of its own holds only the collector, else every series would show twice.
        self.multiprocess = str(multiprocess) if multiprocess is not None else None
        self._exposed = r
        if self.multiprocess is not None:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=self.multiprocess)
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
        self.load_seconds = Gauge("sharelens_model_load_seconds", "Time to load and warm a model version "
                                  "(several workers: the slowest)", ["model_version"], registry=r,
                                  multiprocess_mode="max")
        self.batcher_texts = Histogram("sharelens_batcher_batch_size", "Texts per model call of the batcher",
                                       ["model_version"], buckets=BATCH_BUCKETS, registry=r)
        self.batcher_tokens = Histogram("sharelens_batcher_batch_tokens", "Tokenizer tokens per batch of the "
                                        "batcher", ["model_version"], buckets=TOKEN_BUCKETS, registry=r)
        self.batcher_forwards = Counter("sharelens_batcher_forwards_total", "Model calls of the batcher (a batch "
                                        "is cut into calls of similar text lengths)", ["model_version"], registry=r)
        self.batcher_seconds = Histogram("sharelens_batcher_batch_duration_seconds", "Model time per batch",
                                         ["model_version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("sharelens_queue_depth_texts", "Texts admitted and not yet answered, by queue "
                                 "(predict: the batcher; explain), summed over the workers", ["queue"], registry=r,
                                 multiprocess_mode="livesum")
        self.rejected = Counter("sharelens_rejected_requests_total", "Requests answered 429 (queue full), "
                                "by queue", ["queue"], registry=r)
        self.reloads = Counter("sharelens_model_reloads_total", "Model reloads and promotions by target "
                               "version and result (success, failure)", ["model_version", "result"], registry=r)
        # Per process: a counter loses its pid in multiprocess mode (summed), a gauge in "liveall"
        # mode keeps one series per live worker.
        self.process_requests = Gauge("sharelens_process_http_requests", "HTTP requests answered by this "
                                      "server process, by route (several workers: one series per live worker, "
                                      "label pid)", ["route"], registry=r, multiprocess_mode="liveall")
        self.serving = Gauge("sharelens_model_serving", "1 for the model version a process answers with by "
                             "default, 0 for versions it answered with before (several workers: label pid)",
                             ["model_version"], registry=r, multiprocess_mode="liveall")
        self.explain_stopped = Counter("sharelens_explanations_stopped_total", "Explain requests whose work "
                                       "stopped before its end, by reason (deadline, disconnect, shutdown)",
                                       ["reason"], registry=r)
        self._serving_version: str | None = None
        self._serving_lock = threading.Lock()

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

    def observe_explain_stopped(self, reason: str) -> None:
        self.explain_stopped.labels(reason=reason).inc()

    def observe_reload(self, version: str, ok: bool) -> None:
        self.reloads.labels(model_version=version, result="success" if ok else "failure").inc()

    def observe_serving(self, version: str) -> None:
        """The default model is now `version` (multiprocess mode cannot remove a label: the
        previous version's series turns 0)."""
        with self._serving_lock:
            if self._serving_version is not None and self._serving_version != version:
                self.serving.labels(model_version=self._serving_version).set(0)
            self.serving.labels(model_version=version).set(1)
            self._serving_version = version

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess is not None:
            try:
                forget_dead_processes(self.multiprocess)
            except OSError as exc:  # the scrape still answers with what the files say
                log.warning("metrics: cannot clean up after exited workers: %s", exc)
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """This process stops serving: in multiprocess mode its live series (queue depths, the
        per-process ones) leave the aggregate now; its counters stay in it."""
        if self.multiprocess is not None:
            mark_process_dead(os.getpid(), self.multiprocess)


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
            self.metrics.process_requests.labels(route=route).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - start)
