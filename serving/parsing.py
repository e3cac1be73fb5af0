"""Reading and checking a /predict request ourselves, in a fixed order.

Why not let FastAPI parse the body: it folds invalid JSON, invalid UTF-8 and oversize bodies into
generic errors, reads unbounded bodies, and treats a body without a JSON content type as bytes.
Here each failure gets its own status and fixed detail (serving.errors), the size limit holds
while streaming (a lying Content-Length cannot get past it), and nothing reaches the model
before every check has passed. The CLI runs the same `check_request`; the admin routes read their
small bodies through the same steps (`parse_body`)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving import errors
from serving.schemas import ContextIn, PredictRequest
from serving.settings import Settings
from sharelens.labels import MOTIVES
from sharelens.post import Context, ContextError, Post
from sharelens.text import _ZERO_WIDTH  # the very characters normalise() drops


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    """JSON or nothing: refusing form and text/plain bodies also shuts out cross-site form posts."""
    value = request.headers.get("content-type")
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise errors.unsupported_media_type()


def decode_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.invalid_utf8() from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise errors.invalid_json() from None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], obj: Any) -> M:
    if not isinstance(obj, dict):
        raise errors.bad_shape(errors.NOT_AN_OBJECT)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        found = list(exc.errors())
        first = found[0] if found else {}
        loc = [p for p in first.get("loc", ()) if isinstance(p, str)]
        if first.get("type") == "extra_forbidden" and "context" in loc[:-1]:
            known = Context.field_names() if loc[-2] == "context" else ("posts", "median_engagement")
            raise errors.unknown_context_field(loc[-1], known) from None
        raise errors.bad_field(errors.format_validation_errors(found)) from None


def to_request(obj: Any) -> PredictRequest:
    return validate(PredictRequest, obj)


async def parse_body(request: Request, model: type[M], limit: int) -> M:
    """Content type, size limit, UTF-8, JSON, then the model: the /predict steps for any body."""
    check_content_type(request)
    return validate(model, decode_json(await read_body(request, limit)))


def is_blank(text: str) -> bool:
    return all(c.isspace() or c in _ZERO_WIDTH for c in text)


def check_texts(texts: list[str], settings: Settings) -> None:
    """Batch size first (cheap, and a 10k-text body should not be scanned text by text), then each text."""
    if not texts:
        raise errors.bad_shape(errors.EMPTY_BATCH)
    if len(texts) > settings.max_batch:
        raise errors.batch_too_large(settings.max_batch)
    for text in texts:
        if is_blank(text):
            raise errors.empty_text()
        if len(text) > settings.max_text_chars:
            raise errors.text_too_long(settings.max_text_chars)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise errors.invalid_unicode() from None


def to_context(ctx: ContextIn | None, where: str) -> Context:
    """The checked request context -> the one `Context` type (its own checks: the time parses)."""
    if ctx is None:
        return Context()
    try:
        return Context.from_mapping(ctx.model_dump(exclude_none=True))
    except ContextError as exc:
        raise errors.bad_context(f"{where}.{exc.field}", exc.reason) from None


def check_request(req: PredictRequest, settings: Settings) -> list[Post]:
    """Everything but the model reference (the store checks that): returns the posts to score."""
    if sum(x is not None for x in (req.text, req.texts, req.posts)) != 1:
        raise errors.bad_shape(errors.TEXT_XOR_TEXTS)
    if req.context is not None and req.text is None:
        raise errors.bad_shape(errors.CONTEXT_NEEDS_TEXT)
    if req.text is not None:
        posts = [Post(req.text, to_context(req.context, "context"))]
    elif req.texts is not None:
        posts = [Post(t) for t in req.texts]
    else:
        if len(req.posts or []) > settings.max_batch:  # before converting a huge batch
            raise errors.batch_too_large(settings.max_batch)
        posts = [Post(p.text, to_context(p.context, f"posts[{i}].context")) for i, p in enumerate(req.posts or [])]
    texts = [p.text for p in posts]
    check_texts(texts, settings)
    if req.explain_motive is not None and req.explain_motive not in MOTIVES:
        raise errors.unknown_motive(req.explain_motive)
    if req.explain and len(texts) > settings.max_explain_batch:
        raise errors.explain_batch_too_large(settings.max_explain_batch)
    return posts


async def parse_predict(request: Request, settings: Settings) -> tuple[PredictRequest, list[Post]]:
    check_content_type(request)
    body = await read_body(request, settings.max_body_bytes)
    req = to_request(decode_json(body))
    return req, check_request(req, settings)
