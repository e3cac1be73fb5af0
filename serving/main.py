"""The FastAPI application: wiring only (settings, store, routes, handlers, middleware, page).

The default model loads in `lifespan`, in a worker thread: /healthz answers at once, /readyz
turns 200 when the model is loaded and warmed, and a /predict that arrives earlier waits for the
same load rather than starting a second one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

import sharelens
from serving import errors
from serving.metrics import Metrics, RequestMetricsMiddleware
from serving.middleware import CatchAllMiddleware
from serving.routes import STATIC, router
from serving.settings import Settings
from serving.store import ModelStore

log = logging.getLogger("sharelens.serving")

DESCRIPTION = """Why a Chinese Weibo/WeChat post gets shared (ten share motives) and how far it travels
(engagement tier low / medium / high / viral), with the words that drove each prediction.

Errors always answer `{"detail": "<one sentence>"}`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    store: ModelStore = app.state.store

    def load() -> None:
        try:
            store.load_default()
        except Exception:  # noqa: BLE001 - logged; /readyz reports it, /healthz stays up
            log.exception("the default model could not be loaded")

    # Not awaited: startup completes at once. A load still running at shutdown dies with the process.
    app.state.loading = asyncio.get_running_loop().run_in_executor(None, load)
    yield


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    if store is None:
        store = ModelStore(settings.models_dir, settings.model_name, settings.default_ref,
                           capacity=settings.cache_size)
    store.on_load = metrics.observe_load

    app = FastAPI(title="sharelens", version=sharelens.__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)

    # Added inner to outer: the catch-all must sit inside metrics so its 500s are counted.
    app.add_middleware(CatchAllMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-API-Key"])
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory serving.main:app_factory` (settings from SHARELENS_* variables)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)  # process-wide, so here and not in create_app
    return create_app(settings)
