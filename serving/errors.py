"""Every error the API can answer, with its fixed wording, and the handlers that render them.

Clients (and tests) match on these strings, so they are module constants, never built ad hoc.
Every response body is `{"detail": "<one sentence>"}`: no pydantic error lists, no stack traces.
`ApiError` is a `SharelensError`, so the CLI prints the same `Error E4xx: ...` line."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sharelens.errors import SharelensError

EMPTY_TEXT = "text must not be empty or whitespace"
TEXT_TOO_LONG = "text exceeds {max} characters"
BATCH_TOO_LARGE = "batch exceeds {max} texts"
EXPLAIN_BATCH_TOO_LARGE = "explain is limited to {max} texts per request"
EMPTY_BATCH = "texts must contain at least one text"
TEXT_XOR_TEXTS = "exactly one of 'text', 'texts' or 'posts' must be given"
CONTEXT_NEEDS_TEXT = "'context' goes with 'text'; for a batch give 'posts' with a context each"
UNKNOWN_CONTEXT_FIELD = "unknown context field '{field}'; known fields: {known}"
BAD_CONTEXT = "field '{field}': {reason}"
INVALID_UNICODE = "text contains invalid Unicode (a lone surrogate)"
INVALID_JSON = "request body is not valid JSON"
INVALID_UTF8 = "request body is not valid UTF-8"
BODY_TOO_LARGE = "request body exceeds {max} bytes"
NOT_AN_OBJECT = "request body must be a JSON object"
UNSUPPORTED_MEDIA_TYPE = "content type must be application/json"
FIELD_TYPE = "field '{field}' must be {expected}"
UNKNOWN_FIELD = "unknown field '{field}'"
UNKNOWN_MOTIVE = "unknown explain_motive: {value}"
UNKNOWN_MODEL = "unknown model version or alias: {ref}"
MODEL_UNAVAILABLE = "model could not be loaded; see the server log"
UNAUTHORIZED = "missing or invalid API key"
NOT_READY = "model not loaded yet"
INTERNAL = "internal error"
OVERLOADED = "server busy, retry later"
SHUTTING_DOWN = "server is shutting down"
ADMIN_DISABLED = "admin endpoints are disabled: set SHARELENS_API_KEY"
INVALID_ALIAS = "invalid alias: {alias}"
RELOAD_REFUSED = "reload refused: {version} could not be loaded ({code}: {reason}); the current model keeps serving"

# Why a bundle could not be served, by sharelens error code: a reload answer names the cause
# without the server's paths (the SharelensError message has them; the log gets it whole).
RELOAD_REASONS = {
    "E210": "bundle folder missing",
    "E211": "bundle incomplete",
    "E212": "bundle metadata unreadable",
    "E213": "unsupported bundle format",
    "E214": "label spec mismatch",
    "E215": "library version mismatch",
    "E216": "weights do not match their checksum",
    "E217": "weights could not be loaded",
    "E220": "registry.json is not valid JSON",
    "E221": "model not in the registry",
    "E222": "no default version in the registry",
    "E223": "the default alias names an unknown version",
    "E421": "non-finite output on the warm-up text",
}

# What a JSON value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "string_type": "a string",
    "list_type": "a list of strings",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "dict_type": "an object",
}


class ApiError(SharelensError):
    """A client-visible error: HTTP status + numbered code + fixed detail string."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code, detail)
        self.status = status
        self.detail = detail
        self.headers = headers


# status, code per failure: one table, so the API, the CLI and the docs cannot disagree.
def empty_text() -> ApiError:
    return ApiError(422, "E401", EMPTY_TEXT)


def text_too_long(limit: int) -> ApiError:
    return ApiError(413, "E402", TEXT_TOO_LONG.format(max=limit))


def batch_too_large(limit: int) -> ApiError:
    return ApiError(413, "E403", BATCH_TOO_LARGE.format(max=limit))


def explain_batch_too_large(limit: int) -> ApiError:
    return ApiError(413, "E414", EXPLAIN_BATCH_TOO_LARGE.format(max=limit))


def bad_shape(detail: str) -> ApiError:
    """Both or neither of text/texts, an empty list, a body that is not an object."""
    return ApiError(422, "E404", detail)


def bad_field(detail: str) -> ApiError:
    return ApiError(422, "E405", detail)


def unknown_context_field(field: str, known: tuple[str, ...]) -> ApiError:
    shown = field if len(field) <= 40 else field[:40] + "…"
    return ApiError(422, "E422", UNKNOWN_CONTEXT_FIELD.format(field=shown, known=", ".join(known)))


def bad_context(field: str, reason: str) -> ApiError:
    return ApiError(422, "E423", BAD_CONTEXT.format(field=field, reason=reason))


def invalid_json() -> ApiError:
    return ApiError(400, "E406", INVALID_JSON)


def invalid_utf8() -> ApiError:
    return ApiError(400, "E407", INVALID_UTF8)


def invalid_unicode() -> ApiError:
    return ApiError(422, "E407", INVALID_UNICODE)


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "E408", BODY_TOO_LARGE.format(max=limit))


def unknown_model(ref: str) -> ApiError:
    shown = ref if len(ref) <= 80 else ref[:80] + "…"
    return ApiError(404, "E409", UNKNOWN_MODEL.format(ref=shown))


def unknown_motive(value: str) -> ApiError:
    shown = value if len(value) <= 80 else value[:80] + "…"
    return ApiError(422, "E410", UNKNOWN_MOTIVE.format(value=shown))


def unsupported_media_type() -> ApiError:
    return ApiError(415, "E411", UNSUPPORTED_MEDIA_TYPE)


def unauthorized() -> ApiError:
    return ApiError(401, "E412", UNAUTHORIZED)


def model_unavailable() -> ApiError:
    return ApiError(503, "E420", MODEL_UNAVAILABLE)


def admin_disabled() -> ApiError:
    return ApiError(403, "E415", ADMIN_DISABLED)


def overloaded(retry_after_s: int) -> ApiError:
    return ApiError(429, "E416", OVERLOADED, headers={"Retry-After": str(retry_after_s)})


def reload_refused(version: str, code: str) -> ApiError:
    """409: the registry points at something this server will not swap in; the old model stays."""
    reason = RELOAD_REASONS.get(code, "see the server log")
    return ApiError(409, "E417", RELOAD_REFUSED.format(version=version, code=code, reason=reason))


def invalid_alias(alias: str) -> ApiError:
    shown = alias if len(alias) <= 80 else alias[:80] + "…"
    return ApiError(422, "E418", INVALID_ALIAS.format(alias=shown))


def shutting_down() -> ApiError:
    return ApiError(503, "E419", SHUTTING_DOWN)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def format_validation_errors(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list -> one concise sentence naming the field (first error wins:
    one fix at a time reads better than a wall of messages)."""
    if not errors:
        return "invalid request"
    err = errors[0]
    field = _loc(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return UNKNOWN_FIELD.format(field=field)
    if kind == "json_invalid":
        return INVALID_JSON
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if kind == "list_type" and field != "texts":
            expected = "a list"
        return FIELD_TYPE.format(field=field, expected=expected)
    return f"field '{field}': {err.get('msg', 'invalid value')}"


def _count(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


def render(exc: ApiError) -> JSONResponse:
    """The response for an ApiError; also used by the ASGI middlewares that answer on their own."""
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers or None)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    _count(request, exc.code)
    return render(exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = format_validation_errors(list(exc.errors()))
    status, code = (400, "E406") if detail == INVALID_JSON else (422, "E405")
    _count(request, code)
    return JSONResponse({"detail": detail}, status_code=status)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    _count(request, f"H{exc.status_code}")
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
