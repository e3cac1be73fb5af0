"""Every error code of serving/ and sharelens/, in one catalog, and the handlers that render them.

One code per failure, and one place that says what each code means: `CATALOG` below. The API
takes an error's status and wording from it (the factories), the README's error table is
rendered from it (`python -m serving.errors` prints it), and tests check that every code the
source raises, answers or prints is in it exactly once and that the README shows it.

Every error response body is `{"detail": "<one sentence>", "code": "E4xx"}`: no pydantic error
lists, no stack traces. Clients match on `code`; `detail` is for people and may name the field.
The detail strings are module constants, never built ad hoc. `ApiError` is a `SharelensError`,
so the CLI prints the same `Error E4xx: ...` line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
BAD_CONTEXT = "field '{field}' is not usable: {reason}"
INVALID_UNICODE = "field '{field}' contains invalid Unicode (a lone surrogate)"
INVALID_JSON = "request body is not valid JSON"
INVALID_UTF8 = "request body is not valid UTF-8"
NUMBER_TOO_LONG = "request body has a number of more than {max} digits"
BODY_TOO_LARGE = "request body exceeds {max} bytes"
BODY_TIMEOUT = "request body not received within {seconds} s"
HEADERS_TOO_LARGE = "request headers exceed {max} bytes"
CORS_REFUSED = "CORS preflight refused: {what} not allowed"
NOT_AN_OBJECT = "request body must be a JSON object"
UNSUPPORTED_MEDIA_TYPE = "content type must be application/json"
FIELD_TYPE = "field '{field}' must be {expected}"
FIELD_INVALID = "field '{field}': {reason}"
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
NOT_FOUND = "not found"
METHOD_NOT_ALLOWED = "method not allowed"
HTTP_ERROR = "request refused: {reason}"
UNKNOWN_EXPLAIN_METHOD = "unknown explain_method: {value}; one of {methods}"
EXPLAIN_DEADLINE = "explanation not finished within {seconds} s; retry later"
CLIENT_GONE = "client closed the request before its explanation was done"
EXPLAIN_SHARE = "this client's share of explanations is used up; retry after Retry-After seconds"
CLI_BOOLEAN = "--{name} takes true or false, not {value}"
CLI_HISTORY_PAIR = "--history-posts and --history-median go together"

Kind = Literal["api", "library", "cli"]


@dataclass(frozen=True)
class Code:
    """One failure. api: answered by the HTTP API with `status`, `detail` the template of its
    sentence. library: raised by sharelens (or the model store) as a SharelensError, shown by the
    CLI and named in a 409 reload refusal, `detail` the short reason that refusal gives. cli: a
    command-line tool's own `Error E4xx: ...` line (exit status 2), `detail` its template."""

    code: str
    status: int | None
    detail: str
    meaning: str
    kind: Kind = "api"


def _lib(code: str, reason: str, meaning: str) -> Code:
    return Code(code, None, reason, meaning, "library")


def _cli(code: str, detail: str, meaning: str) -> Code:
    return Code(code, None, detail, meaning, "cli")


# Sorted by code. A tuple, not a dict literal: a repeated code would silently replace the first.
CATALOG: tuple[Code, ...] = (
    _lib("E210", "bundle folder missing", "the version's bundle folder does not exist"),
    _lib("E211", "bundle incomplete", "a required bundle file is missing (interrupted or damaged save)"),
    _lib("E212", "bundle metadata unreadable", "bundle.json or labels.json is not UTF-8 JSON objects"),
    _lib("E213", "unsupported bundle format", "the bundle was written by another bundle format"),
    _lib("E214", "label spec mismatch", "the bundle was trained for other labels than this sharelens"),
    _lib("E215", "library version mismatch", "the bundle was saved with another major torch/transformers"),
    _lib("E216", "weights do not match their checksum", "model.safetensors differs from its recorded sha256"),
    _lib("E217", "weights could not be loaded", "config.json or the weights could not be loaded into the network"),
    _lib("E218", "bundle folder exists", "training would overwrite a bundle; versions are never overwritten"),
    _lib("E219", "bundle cannot run on the lean runtime", "the architecture needs SHARELENS_RUNTIME=transformers"),
    _lib("E220", "registry.json is not valid JSON", "models/registry.json does not parse; restore or repair it"),
    _lib("E221", "model not in the registry", "no model of that name is registered"),
    _lib("E222", "no default version in the registry", "the model has neither a production nor a latest alias"),
    _lib("E223", "the default alias names an unknown version", "a version or alias is not in the registry"),
    _lib("E224", "version already registered", "versions are never reused"),
    _lib("E225", "invalid alias", "an alias must be lowercase letters, digits, - or _ (and not a version)"),
    _lib("E226", "invalid model name", "a model name must be lowercase letters, digits, - or _"),
    _lib("E227", "invalid model version", "a version must be v<NNNN>-<YYYYMMDD>"),
    _lib("E228", "registry.json is not valid UTF-8", "models/registry.json has bytes that are not UTF-8"),
    _lib("E229", "registry.json has the wrong shape",
         "models/registry.json parses but is not {models: {name: {versions: [...], aliases: {...}}}}"),
    _lib("E230", "invalid context value", "a context field has a value sharelens cannot use"),
    _lib("E231", "unknown context field", "a context mapping has a field sharelens does not know"),
    _lib("E240", "unsupported inference backend", "a backend other than fp32 or int8 was asked for"),
    _lib("E241", "no int8 export", "SHARELENS_BACKEND=int8 but the bundle has no int8 export: `make quantize`"),
    _lib("E242", "int8 weights do not match their checksum", "the int8 export is corrupt or altered"),
    _lib("E243", "int8 export made from other weights", "the int8 export is stale: `make quantize` again"),
    _lib("E244", "int8 export does not match the network",
         "the int8 export's layers or shapes differ from the bundle's network: `make quantize` again"),
    _lib("E245", "quantisation calibration incomplete", "the calibration texts never reached a layer to quantise"),
    _lib("E246", "nothing to quantise", "the network has no encoder Linear layers"),
    _lib("E247", "unexpected quantisation scheme", "torch quantised a layer with another scheme than expected"),
    _lib("E248", "int8 manifest unreadable", "int8/manifest.json does not parse or has another format: "
         "`make quantize` again"),
    _lib("E249", "int8 export could not be loaded", "the int8 weights could not be read (truncated or damaged): "
         "`make quantize` again"),
    _lib("E250", "calibration.json unreadable",
         "calibration.json is not a JSON object of finite temperatures above 0: `make eval` again, or delete it"),
    _lib("E251", "context features unreadable", "the bundle's context.json is unreadable or does not match "
         "this sharelens: retrain the bundle"),
    _lib("E252", "unknown runtime", "a runtime other than auto, lean or transformers was asked for"),
    _lib("E253", "int8 off the CPU", "the int8 backend runs on the CPU only; use fp32 on an accelerator"),
    _lib("E254", "onnxruntime off the CPU", "the onnxruntime runtime is run on the CPU here; use fp32 lean on an "
         "accelerator"),
    _lib("E255", "onnxruntime not installed", "SHARELENS_RUNTIME=onnxruntime (or the bench's ONNX peer) needs "
         "onnxruntime and onnx: `pip install -e '.[bench]'`"),
    Code("E401", 422, EMPTY_TEXT, "a text is empty, whitespace or zero-width characters only"),
    Code("E402", 413, TEXT_TOO_LONG, "a text is longer than SHARELENS_MAX_TEXT_CHARS characters"),
    Code("E403", 413, BATCH_TOO_LARGE, "more texts or posts than SHARELENS_MAX_BATCH"),
    Code("E404", 422, TEXT_XOR_TEXTS, "none, or more than one, of text, texts and posts"),
    Code("E405", 422, FIELD_TYPE, "a field has the wrong JSON type"),
    Code("E406", 400, INVALID_JSON, "the body (or an empty body) does not parse as JSON"),
    Code("E407", 400, INVALID_UTF8, "the body's bytes are not UTF-8"),
    Code("E408", 413, BODY_TOO_LARGE, "the body is larger than SHARELENS_MAX_BODY_BYTES (or 4096 for admin)"),
    Code("E409", 404, UNKNOWN_MODEL, "`model` (or an alias move's version) names no registered version or alias"),
    Code("E410", 422, UNKNOWN_MOTIVE, "explain_motive is not one of the ten motives"),
    Code("E411", 415, UNSUPPORTED_MEDIA_TYPE,
         "a POST body without Content-Type application/json (or +json); a missing one too, so that a "
         "cross-site form or no-cors request cannot run the model"),
    Code("E412", 401, UNAUTHORIZED, "SHARELENS_API_KEY is set and X-API-Key / Bearer is missing or wrong"),
    Code("E414", 413, EXPLAIN_BATCH_TOO_LARGE, "explain asked for more texts than SHARELENS_MAX_EXPLAIN_BATCH"),
    Code("E415", 403, ADMIN_DISABLED, "an /admin endpoint while no API key is configured"),
    Code("E416", 429, OVERLOADED, "the predict or explain queue is full; retry after Retry-After seconds"),
    Code("E417", 409, RELOAD_REFUSED,
         "reload or alias move refused: the named library code says why; the old model keeps serving"),
    Code("E418", 422, INVALID_ALIAS, "an alias must be lowercase letters, digits, - or _ (and not a version)"),
    Code("E419", 503, SHUTTING_DOWN, "the server is stopping: no new work, and explanations stop between posts"),
    Code("E420", 503, MODEL_UNAVAILABLE,
         "the model (or registry.json) cannot be read or loaded; the server log has the library error"),
    _lib("E421", "non-finite output on the warm-up text", "the loaded model gives NaN or infinite probabilities"),
    Code("E422", 422, UNKNOWN_CONTEXT_FIELD, "context (or author_history) has a field the API does not know"),
    Code("E423", 422, BAD_CONTEXT, "a context value cannot be used (e.g. posted_at is not ISO 8601)"),
    Code("E424", 422, NOT_AN_OBJECT, "the body is JSON but not an object"),
    Code("E425", 422, EMPTY_BATCH, "texts or posts is an empty list"),
    Code("E426", 422, CONTEXT_NEEDS_TEXT, "context was given with texts or posts instead of text"),
    Code("E427", 422, UNKNOWN_FIELD, "the body has a field the endpoint does not know"),
    Code("E428", 422, FIELD_INVALID, "a field is missing or its value is out of range"),
    Code("E429", 422, INVALID_UNICODE,
         "a string (or key) of the body holds an escaped lone surrogate such as \\ud800: valid JSON, "
         "not valid Unicode"),
    _cli("E430", "no posts at {path}; run `make data`", "bench / loadtest: the posts file does not exist"),
    _cli("E431", "--configs takes distinct backend[:runtime] entries", "bench: --configs is malformed"),
    _cli("E432", "the load generator `wrk` is not installed", "loadtest: install wrk"),
    _cli("E433", "--clients and --duration must be at least 1", "loadtest: bad arguments"),
    _cli("E434", "the server did not become ready: {reason}", "loadtest: the server it started never got ready"),
    Code("E435", 400, NUMBER_TOO_LONG, "an integer of the body has more digits than Python converts"),
    Code("E436", 503, NOT_READY, "/readyz before the default model finished loading"),
    Code("E437", 404, NOT_FOUND, "no endpoint (or static file) at this path"),
    Code("E438", 405, METHOD_NOT_ALLOWED, "the endpoint exists but not for this method"),
    Code("E439", 400, HTTP_ERROR, "any other error the web framework raises itself (its own status)"),
    Code("E440", 408, BODY_TIMEOUT, "the body did not arrive within SHARELENS_BODY_TIMEOUT_S"),
    _cli("E441", CLI_BOOLEAN, "sharelens-serve predict: a true/false option got another value"),
    _cli("E442", CLI_HISTORY_PAIR, "sharelens-serve predict: only one of the two author-history options"),
    _cli("E443", "no usable posts in {path}", "loadtest: the posts file has no post it can send"),
    Code("E444", 431, HEADERS_TOO_LARGE, "path, query and headers together exceed SHARELENS_MAX_HEADER_BYTES"),
    Code("E445", 400, CORS_REFUSED, "a browser's preflight from an origin (or with a method or header) not in "
         "SHARELENS_CORS_ORIGINS and the allowed lists"),
    _cli("E460", "unknown explanation method {method!r}; one of {methods}",
         "faithfulness: --methods names a method sharelens does not have"),
    Code("E461", 422, UNKNOWN_EXPLAIN_METHOD, "explain_method is not one of the served explanation methods"),
    Code("E462", 503, EXPLAIN_DEADLINE,
         "an explanation request waited for a slot and ran for longer than SHARELENS_EXPLAIN_DEADLINE_S; its "
         "work stopped at the next post"),
    Code("E463", 429, EXPLAIN_SHARE,
         "one client (API key, else address) asked for more explained texts than SHARELENS_EXPLAIN_CLIENT_RATE "
         "a second with bursts of SHARELENS_EXPLAIN_CLIENT_BURST"),
    Code("E464", 499, CLIENT_GONE, "the client disconnected while its explanation waited or ran: the work "
         "stopped at the next post (logged and counted; the client is gone and never reads it)"),
    _cli("E470", "no such input file {path}", "sharelens score: the input file does not exist"),
    _cli("E471", "{what} {path} has an unknown extension {ext!r}; use one of .csv, .jsonl, .parquet",
         "sharelens score: the input or output is not CSV, JSONL or Parquet by its extension"),
    _cli("E472", "{path} has no text column {column!r} (columns: ...); say which with --text-column",
         "sharelens score: the text column (or the --id-column, or a --context-columns column) is missing"),
    _cli("E473", "--context-columns takes field=column pairs separated by commas",
         "sharelens score: --context-columns is malformed, --batch-size / --chunk-size / --ray-actors / "
         "--ray-threads-per-actor below 1, or --ray-* options without --engine ray"),
    _cli("E474", "cannot read {path}: {reason}", "sharelens score: the input does not parse as its format"),
    _cli("E475", "no row of {path} could be scored; nothing written",
         "sharelens score: every row was rejected (or the input is empty)"),
    _cli("E476", "--engine ray needs the ray package with Ray Data ({module} is not installed): "
         "pip install 'sharelens[ray]'", "sharelens score --engine ray: Ray is not installed"),
    _cli("E477", "cannot start or join {where}: {reason}",
         "sharelens score --engine ray: Ray did not start, the --ray-address cluster cannot be reached, or it has "
         "too few CPUs for the actors"),
    _cli("E478", "a Ray actor failed while scoring: {reason}",
         "sharelens score --engine ray: an actor failed, or loaded another model version from the bundle path"),
    Code("E500", 500, INTERNAL, "a bug: the server log has the trace"),
)
CATALOG_BY_CODE: dict[str, Code] = {c.code: c for c in CATALOG}

# What a JSON value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "string_type": "a string",
    "list_type": "a list of strings",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "dict_type": "an object",
}


def catalog_markdown() -> str:
    """The README's error table (regenerate with `python -m serving.errors`)."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    rows = ["| code | HTTP | where | detail | meaning |", "|---|---|---|---|---|"]
    for c in CATALOG:
        status = str(c.status) if c.status is not None else ""
        rows.append(f"| `{c.code}` | {status} | {c.kind} | {cell(c.detail)} | {cell(c.meaning)} |")
    return "\n".join(rows)


def _shown(value: str, limit: int = 80) -> str:
    """An echoed client value: cut to `limit` characters, and never a lone surrogate (the body
    check refuses those first; were one to get here, encoding the answer would raise, a 500)."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


class ApiError(SharelensError):
    """A client-visible error: HTTP status + numbered code + fixed detail string."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code, detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def _api(code: str, /, headers: dict[str, str] | None = None, **fields: Any) -> ApiError:
    """The error of `code`, status and wording from the catalog."""
    entry = CATALOG_BY_CODE[code]
    assert entry.status is not None, code
    return ApiError(entry.status, code, entry.detail.format(**fields), headers)


def empty_text() -> ApiError:
    return _api("E401")


def text_too_long(limit: int) -> ApiError:
    return _api("E402", max=limit)


def batch_too_large(limit: int) -> ApiError:
    return _api("E403", max=limit)


def text_xor_texts() -> ApiError:
    return _api("E404")


def explain_batch_too_large(limit: int) -> ApiError:
    return _api("E414", max=limit)


def not_an_object() -> ApiError:
    return _api("E424")


def empty_batch() -> ApiError:
    return _api("E425")


def context_needs_text() -> ApiError:
    return _api("E426")


def unknown_context_field(field: str, known: tuple[str, ...]) -> ApiError:
    return _api("E422", field=_shown(field, 40), known=", ".join(known))


def bad_context(field: str, reason: str) -> ApiError:
    return _api("E423", field=_shown(field), reason=_shown(reason, 200))


def invalid_json() -> ApiError:
    return _api("E406")


def invalid_utf8() -> ApiError:
    return _api("E407")


def invalid_unicode(field: str) -> ApiError:
    return _api("E429", field=_shown(field))


def number_too_long(digits: int) -> ApiError:
    return _api("E435", max=digits)


def body_too_large(limit: int) -> ApiError:
    return _api("E408", max=limit)


def body_timeout(seconds: float) -> ApiError:
    return _api("E440", seconds=f"{seconds:g}")


def headers_too_large(limit: int) -> ApiError:
    return _api("E444", max=limit)


def cors_refused(what: str) -> ApiError:
    return _api("E445", what=_shown(what))


def unknown_model(ref: str) -> ApiError:
    return _api("E409", ref=_shown(ref))


def unknown_motive(value: str) -> ApiError:
    return _api("E410", value=_shown(value))


def unsupported_media_type() -> ApiError:
    return _api("E411")


def unauthorized() -> ApiError:
    return _api("E412")


def model_unavailable() -> ApiError:
    return _api("E420")


def not_ready() -> ApiError:
    return _api("E436")


def admin_disabled() -> ApiError:
    return _api("E415")


def overloaded(retry_after_s: int) -> ApiError:
    return _api("E416", headers={"Retry-After": str(retry_after_s)})


def reload_refused(version: str, code: str) -> ApiError:
    """409: the registry points at something this server will not swap in; the old model stays.
    The reason is the catalog's short one, without the server's paths (the SharelensError message
    has them; the log gets it whole)."""
    entry = CATALOG_BY_CODE.get(code)
    reason = entry.detail if entry is not None and entry.kind == "library" else "see the server log"
    return _api("E417", version=_shown(version), code=code, reason=reason)


def invalid_alias(alias: str) -> ApiError:
    return _api("E418", alias=_shown(alias))


def unknown_explain_method(value: str, methods: tuple[str, ...]) -> ApiError:
    return _api("E461", value=_shown(value), methods=", ".join(methods))


def explain_deadline(retry_after_s: int, seconds: float) -> ApiError:
    return _api("E462", headers={"Retry-After": str(retry_after_s)}, seconds=f"{seconds:g}")


def explain_share_exhausted(retry_after_s: int) -> ApiError:
    return _api("E463", headers={"Retry-After": str(retry_after_s)})


def client_gone() -> ApiError:
    return _api("E464")


def shutting_down() -> ApiError:
    return _api("E419")


def internal() -> ApiError:
    return _api("E500")


def http_error(status: int, reason: str) -> ApiError:
    """Starlette's own 404 / 405 (unknown path, wrong method, missing static file), and anything
    else it raises, with a code like every other answer."""
    if status == 404:
        return _api("E437")
    if status == 405:
        return _api("E438")
    return ApiError(status, "E439", HTTP_ERROR.format(reason=_shown(reason)))


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """Pydantic's error list -> one concise error naming the field (first error wins: one fix at
    a time reads better than a wall of messages), with the code of that kind of failure."""
    if not errors:
        return _api("E428", field="body", reason="invalid value")
    err = errors[0]
    field = _shown(_loc(tuple(err.get("loc", ()))))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return _api("E427", field=field)
    if kind == "json_invalid":
        return invalid_json()
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if kind == "list_type" and field != "texts":
            expected = "a list"
        return _api("E405", field=field, expected=expected)
    return _api("E428", field=field, reason=_shown(str(err.get("msg", "invalid value")), 200))


def _count(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


def render(exc: ApiError) -> JSONResponse:
    """The response for an ApiError; also used by the ASGI middlewares that answer on their own."""
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status, headers=headers or None)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    _count(request, exc.code)
    return render(exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await api_error_handler(request, validation_error(list(exc.errors())))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = http_error(exc.status_code, str(exc.detail))
    error.headers = dict(getattr(exc, "headers", None) or {}) or None  # e.g. 405's Allow
    return await api_error_handler(request, error)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)


if __name__ == "__main__":
    print(catalog_markdown())
