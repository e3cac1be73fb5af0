"""Reading and checking a /predict request ourselves, in a fixed order.

Why not let FastAPI parse the body: it folds invalid JSON, invalid UTF-8 and oversize bodies into
generic errors, reads unbounded bodies, and treats a body without a JSON content type as bytes.
Here each failure gets its own status, code and fixed detail (serving.errors), the size and time
limits hold while streaming (a lying Content-Length cannot get past them, nor can a client that
sends a byte a minute), and nothing reaches the model before every check has passed. The CLI runs the same `check_request`; the admin routes read their
small bodies through the same steps (`parse_body`)."""

from __future__ import annotations

import json
import sys
from typing import Any, TypeVar

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving import errors
from serving.schemas import ContextIn, PredictRequest
from serving.settings import Settings
from sharelens.explain import METHODS
from sharelens.labels import MOTIVES
from sharelens.post import Context, ContextError, Post
from sharelens.text import _ZERO_WIDTH  # the very characters normalise() drops


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing more than `limit` bytes (declared or actually sent), and a body
    still incomplete after `timeout_s` (uvicorn has no body timeout: a client trickling bytes
    would hold a connection, and a slot of the concurrency limit, for ever)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise errors.body_too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise errors.body_timeout(timeout_s or 0) from None
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    """JSON only, and said so: a body without a Content-Type is refused too. A web page may send a
    cross-site POST without a CORS preflight only with no type, text/plain or a form type (a
    `no-cors` fetch); were those read as JSON, any page open in a browser could make a server on
    localhost run explanations. application/json (or a +json type) needs the preflight, which
    CORS refuses for origins not configured."""
    value = request.headers.get("content-type")
    media = (value or "").split(";", 1)[0].strip().lower()
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
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise errors.invalid_json() from None
    except ValueError:  # an integer longer than int() converts (CVE-2020-10735's limit), not a JSON error
        raise errors.number_too_long(getattr(sys, "get_int_max_str_digits", lambda: 4300)()) from None
    check_unicode(obj)
    return obj


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_unicode(obj: Any, where: str = "") -> None:
    """Refuse a lone surrogate ("\\ud800" is valid JSON, not valid Unicode) in any string or key of
    the body, naming where (the first one in the body's order): before anything echoes it in a
    detail (encoding that answer raised, a 500) or hands it to the tokenizer. Iterative, so that
    no recursion limit has to hold here."""
    stack: list[tuple[Any, str]] = [(obj, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                raise errors.invalid_unicode(at or "body")
        elif isinstance(value, dict):
            if any(_has_surrogate(key) for key in value):
                raise errors.invalid_unicode(at or "body")
            stack.extend((item, f"{at}.{key}" if at else key) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, f"{at}[{i}]") for i, item in reversed(list(enumerate(value))))


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], obj: Any) -> M:
    if not isinstance(obj, dict):
        raise errors.not_an_object()
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        # An unknown field first: a misspelt key ("mean" for "median_engagement") is also a missing
        # one, and naming the spelling is the fix.
        found = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        first = found[0] if found else {}
        loc = [p for p in first.get("loc", ()) if isinstance(p, str)]
        if first.get("type") == "extra_forbidden" and "context" in loc[:-1]:
            known = Context.field_names() if loc[-2] == "context" else ("posts", "median_engagement")
            raise errors.unknown_context_field(loc[-1], known) from None
        raise errors.validation_error(found) from None


def to_request(obj: Any) -> PredictRequest:
    return validate(PredictRequest, obj)


async def parse_body(request: Request, model: type[M], limit: int, timeout_s: float | None = None) -> M:
    """Content type, size and time limits, UTF-8, JSON, Unicode, then the model: the /predict
    steps for any body."""
    check_content_type(request)
    return validate(model, decode_json(await read_body(request, limit, timeout_s)))


def is_blank(text: str) -> bool:
    return all(c.isspace() or c in _ZERO_WIDTH for c in text)


def check_texts(texts: list[str], settings: Settings) -> None:
    """Batch size first (cheap, and a 10k-text body should not be scanned text by text), then each text."""
    if not texts:
        raise errors.empty_batch()
    if len(texts) > settings.max_batch:
        raise errors.batch_too_large(settings.max_batch)
    for i, text in enumerate(texts):
        if is_blank(text):
            raise errors.empty_text()
        if len(text) > settings.max_text_chars:
            raise errors.text_too_long(settings.max_text_chars)
        if _has_surrogate(text):  # the API refused these in check_unicode; the CLI's argv can hold them
            raise errors.invalid_unicode("text" if len(texts) == 1 else f"texts[{i}]")


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
        raise errors.text_xor_texts()
    if req.context is not None and req.text is None:
        raise errors.context_needs_text()
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
    if req.explain_method is not None and req.explain_method not in METHODS:
        raise errors.unknown_explain_method(req.explain_method, METHODS)
    if req.explain and len(texts) > settings.max_explain_batch:
        raise errors.explain_batch_too_large(settings.max_explain_batch)
    return posts


async def parse_predict(request: Request, settings: Settings) -> tuple[PredictRequest, list[Post]]:
    check_content_type(request)
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    req = to_request(decode_json(body))
    return req, check_request(req, settings)
