"""The FastAPI application: wiring only (settings, store, routes, handlers, middleware, page).

The default model loads in `lifespan`, in a worker thread: /healthz answers at once, /readyz
turns 200 when the model is loaded and warmed (jieba's dictionary for explanations loads right
after, in the same thread), and a /predict that arrives earlier waits for the
same load rather than starting a second one. The lifespan also runs the registry watch
(`serving.watch`: each worker process follows the default alias). On shutdown (uvicorn has already let in-flight
requests finish, see `serving.cli`), explanations still running stop at their next post and the
batcher answers whatever is still queued, within what is left of the one shutdown budget
(`serving.shutdown`).

Middleware, outermost first: request metrics, CORS (answers preflights before any key is asked
for), the catch-all 500 and security headers, the cap on request heads, the API key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import sharelens
from serving import admin, errors, watch
from serving.admission import Gate
from serving.auth import ApiKeyMiddleware
from serving.batcher import Batcher
from serving.explain import set_thread_count
from serving.explain_control import ClientShare, ExplainSlots
from serving.metrics import Metrics, RequestMetricsMiddleware, multiprocess_active
from serving.middleware import CatchAllMiddleware, CorsMiddleware, HeaderLimitMiddleware
from serving.routes import STATIC, router
from serving.settings import Settings
from serving.shutdown import ShutdownBudget, watch_signals
from serving.store import ModelStore, loader_for
from sharelens.explain import warm_up as warm_up_words

log = logging.getLogger("sharelens.serving")

DESCRIPTION = """Why a Chinese Weibo/WeChat post gets shared (ten share motives) and how far it travels
(engagement tier low / medium / high / viral), with the words that drove each prediction.

Errors always answer `{"detail": "<one sentence>", "code": "E4xx"}`: match on `code` (the README lists
every code), show `detail`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    store: ModelStore = app.state.store
    budget: ShutdownBudget = app.state.shutdown
    watch_signals(budget)  # the budget's clock starts at SIGTERM, not when the drain below starts

    def load() -> None:
        try:
            store.load_default()
        except Exception:  # noqa: BLE001 - logged; /readyz reports it, /healthz stays up
            log.exception("the default model could not be loaded")
            return
        # After readiness, not before: predictions do not need jieba's dictionary (about 0.9 s to
        # load), only explanations do, and one that arrives earlier waits for the same load.
        warm_up_words()

    # Not awaited: startup completes at once. A load still running at shutdown dies with the process.
    loop = asyncio.get_running_loop()
    app.state.loading = loop.run_in_executor(None, load)
    watching = watch.start(store, app.state.settings.registry_poll_s)  # each worker follows the registry
    yield
    await watch.stop(watching)  # no new load while draining
    # uvicorn's graceful period is over: what still runs belongs to requests that finished or were cut.
    budget.stop()
    left = budget.remaining()
    if not await loop.run_in_executor(None, app.state.batcher.close, left):
        log.error("the batcher did not drain within the %.1f s left of the shutdown budget", left)
    app.state.metrics.close()  # several workers: this one's live series leave the aggregate


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(multiprocess_active())  # several workers: /metrics aggregates them (serving.metrics)
    if store is None:
        store = ModelStore(settings.models_dir, settings.model_name, settings.default_ref,
                           capacity=settings.cache_size, loader=loader_for(settings.backend, settings.runtime,
                                                                    settings.resolved_torch_threads()))
    store.on_load = metrics.observe_load
    store.on_reload = metrics.observe_reload
    store.on_default = metrics.observe_serving
    if store.default_version is not None:  # a store loaded before the app
        metrics.observe_serving(store.default_version)
    gates = {name: Gate(name, limit, settings.retry_after_s, metrics.observe_depth, metrics.observe_reject)
             for name, limit in (("predict", settings.max_queue), ("explain", settings.max_explain_queue))}
    for name in gates:
        metrics.observe_depth(name, 0)  # the series exist before the first request

    app = FastAPI(title="sharelens", version=sharelens.__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.batcher = Batcher(settings.batch_window_ms, settings.batch_max_tokens, settings.batch_max_texts,
                                settings.batch_pad_slack, gate=gates["predict"], on_batch=metrics.observe_batch,
                                workers=settings.resolved_model_threads(),
                                thread_init=partial(set_thread_count, settings.resolved_torch_threads()))
    app.state.explain_gate = gates["explain"]
    app.state.explain_slots = ExplainSlots(settings.resolved_explain_slots())
    app.state.explain_share = ClientShare(settings.explain_client_rate, settings.explain_client_burst)
    app.state.shutdown = ShutdownBudget(settings.shutdown_timeout_s)

    app.include_router(router)
    app.include_router(admin.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)

    # Added inner to outer: the catch-all must sit inside metrics so its 500s are counted.
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, metrics=metrics)
    app.add_middleware(HeaderLimitMiddleware, limit=settings.max_header_bytes, metrics=metrics)
    app.add_middleware(CatchAllMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CorsMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-API-Key"])
    known = frozenset([*(str(r.path) for r in (*router.routes, *admin.router.routes)),  # type: ignore[attr-defined]
                       *(u for u in (app.openapi_url, app.docs_url, app.redoc_url) if u)])
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, known_paths=known)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory serving.main:app_factory` (settings from SHARELENS_* variables)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    import torch

    # The default for threads that set nothing themselves (the batcher's model threads and the
    # explainer set their own, see create_app and serving.explain).
    torch.set_num_threads(settings.resolved_torch_threads())
    return create_app(settings)
