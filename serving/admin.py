"""Admin routes: swap the served model without a restart and without dropping requests.

The key check lives in `serving.auth` (these paths always need a configured key). The work is
`ModelStore.reload` / `ModelStore.promote`: load and warm first, swap atomically after, refuse
with 409 when the bundle is broken. Both run in the thread pool: a load takes seconds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from serving import parsing
from serving.routes import get_settings, get_store
from serving.schemas import AliasRequest, ErrorBody, ModelRef, ReloadResponse
from serving.settings import Settings
from serving.store import ModelStore, Swap

ADMIN_BODY_LIMIT = 4096

router = APIRouter(prefix="/admin", tags=["admin"])

_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 408, 409, 413, 415, 422)}
_ALIAS_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": AliasRequest.model_json_schema()}}}}


def _answer(store: ModelStore, swap: Swap, alias: str | None = None) -> ReloadResponse:
    return ReloadResponse(model=ModelRef(name=store.name, version=swap.version), previous=swap.previous,
                          seconds=round(swap.seconds, 3), alias=alias)


@router.post("/reload", response_model=ReloadResponse, responses=_ERRORS,
             summary="Re-read the registry and serve what the default alias now names (load, warm, swap)")
async def reload(store: Annotated[ModelStore, Depends(get_store)]) -> ReloadResponse:
    return _answer(store, await run_in_threadpool(store.reload))


@router.post("/aliases", response_model=ReloadResponse, responses=_ERRORS, openapi_extra=_ALIAS_BODY,
             summary="Move an alias to a version (refused if that version cannot be loaded), then reload")
async def set_alias(request: Request, store: Annotated[ModelStore, Depends(get_store)],
                    settings: Annotated[Settings, Depends(get_settings)]) -> ReloadResponse:
    body = await parsing.parse_body(request, AliasRequest, ADMIN_BODY_LIMIT, settings.body_timeout_s)
    return _answer(store, await run_in_threadpool(store.promote, body.alias, body.version), alias=body.alias)
