"""HTTP routes: each one reads its inputs, calls one function and returns its answer.

Dependencies (`get_store`, `get_settings`, ...) read from `app.state`, which `create_app` fills;
tests swap them with `app.dependency_overrides`. They, the probes and /metrics are `async def`:
FastAPI runs a plain `def` in the shared thread pool, and when explanations and model loads hold
every thread of it, a sync /healthz waited for one, timed out, and the orchestrator restarted a
server that was merely busy. What blocks (the registry file of /models, model calls) stays in
threads. The API key is checked by `serving.auth` for every path at once, not here; the admin
routes live in `serving.admin`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from serving import errors, parsing, service
from serving.admission import Gate
from serving.auth import given_key
from serving.batcher import Batcher
from serving.explain import Explainer
from serving.explain_control import ClientShare, ExplainSlots, StoppedError, StopToken, client_key
from serving.metrics import Metrics
from serving.schemas import (
    ErrorBody,
    Health,
    ModelRef,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
    Ready,
)
from serving.settings import Settings
from serving.store import ModelStore

STATIC = Path(__file__).resolve().parent / "static"


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_explainer(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> Explainer:
    return Explainer(steps=settings.explain_steps, top_k=settings.explain_top_k,
                     threads=settings.resolved_explain_threads(), stop=request.app.state.shutdown.stopping,
                     method=settings.explain_method, max_words=settings.explain_max_words)


async def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


async def get_explain_gate(request: Request) -> Gate:
    return request.app.state.explain_gate


async def get_explain_slots(request: Request) -> ExplainSlots:
    return request.app.state.explain_slots


async def get_explain_share(request: Request) -> ClientShare:
    return request.app.state.explain_share


router = APIRouter()

_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 408, 413, 415, 422, 429, 503)}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PredictRequest.model_json_schema()}}}}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_PREDICT_BODY,
             tags=["predict"], summary="Share motive and engagement tier of one post or a batch, optionally explained")
async def predict(request: Request, store: Annotated[ModelStore, Depends(get_store)],
                  settings: Annotated[Settings, Depends(get_settings)],
                  explainer: Annotated[Explainer, Depends(get_explainer)],
                  metrics: Annotated[Metrics, Depends(get_metrics)],
                  batcher: Annotated[Batcher, Depends(get_batcher)],
                  explain_gate: Annotated[Gate, Depends(get_explain_gate)],
                  slots: Annotated[ExplainSlots, Depends(get_explain_slots)],
                  share: Annotated[ClientShare, Depends(get_explain_share)]) -> PredictResponse:
    req, posts = await parsing.parse_predict(request, settings)
    if not req.explain:  # cheap: shares model calls with concurrent requests
        return await service.predict_batched(store, batcher, posts, model=req.model,
                                             observe=metrics.observe_predict)
    # Expensive: this client's share first, then the explain queue, then a slot until the deadline
    # (serving.explain_control); the work stops at its next post once the client hangs up.
    share.take(client_key(given_key(request.headers) if settings.api_key else None,
                          request.client.host if request.client else None), len(posts))
    explain_gate.acquire(len(posts))
    token = StopToken(settings.explain_deadline_s, request.app.state.shutdown.stopping)
    work = partial(service.predict, store, posts, explainer, explain=True, explain_motive=req.explain_motive,
                   explain_method=req.explain_method, model=req.model, observe=metrics.observe_predict)
    try:
        return await slots.run(lambda t: work(token=t), token, settings.retry_after_s,
                               disconnected=request.is_disconnected)
    except StoppedError as exc:  # the client left: nobody reads this answer
        metrics.observe_explain_stopped(exc.reason)
        return errors.render(errors.client_gone())
    except errors.ApiError as exc:
        if exc.code in ("E462", "E419"):
            metrics.observe_explain_stopped("deadline" if exc.code == "E462" else "shutdown")
        raise
    finally:
        explain_gate.release(len(posts))


@router.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorBody}}, tags=["ops"],
            summary="Readiness: the default model is loaded and warmed")
async def readyz(store: Annotated[ModelStore, Depends(get_store)]) -> Ready | JSONResponse:
    serving, version = store.current  # never loads: this runs on the event loop
    if not store.ready or serving is None or version is None:
        return errors.render(errors.model_unavailable() if store.load_error else errors.not_ready())
    return Ready(model=ModelRef(name=store.name, version=version),
                 backend=getattr(serving, "backend", None), runtime=getattr(serving, "runtime", None))


@router.get("/models", response_model=ModelsResponse, responses={503: {"model": ErrorBody}}, tags=["ops"],
            summary="Registered versions, aliases, and which version answers by default")
def models(store: Annotated[ModelStore, Depends(get_store)]) -> ModelsResponse:
    return ModelsResponse(**store.describe())


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
async def metrics_endpoint(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
