"""Bad input never crashes and never leaks a trace: exact status and exact detail for each case."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from serving import errors

J = {"content-type": "application/json"}


def _post(client, body, headers=J):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/predict", content=raw, headers=headers)


CASES = [
    ("empty", {"text": ""}, 422, errors.EMPTY_TEXT, "E401"),
    ("whitespace", {"text": "  \n\t\u3000 "}, 422, errors.EMPTY_TEXT, "E401"),
    ("zero-width only", {"text": "\u200b\u200b"}, 422, errors.EMPTY_TEXT, "E401"),
    ("zero-width and spaces", {"text": "\u200b \u3000\u200b \ufeff"}, 422, errors.EMPTY_TEXT, "E401"),
    ("blank in batch", {"texts": ["正常的一条", " "]}, 422, errors.EMPTY_TEXT, "E401"),
    ("too long", {"text": "字" * 2001}, 413, "text exceeds 2000 characters", "E402"),
    ("batch too large", {"texts": ["一条微博"] * 65}, 413, "batch exceeds 64 texts", "E403"),
    ("explain batch too large", {"texts": ["一条微博"] * 17, "explain": True}, 413,
     "explain is limited to 16 texts per request", "E414"),
    ("empty batch", {"texts": []}, 422, errors.EMPTY_BATCH, "E425"),
    ("both", {"text": "a", "texts": ["b"]}, 422, errors.TEXT_XOR_TEXTS, "E404"),
    ("neither", {"explain": True}, 422, errors.TEXT_XOR_TEXTS, "E404"),
    ("empty object", {}, 422, errors.TEXT_XOR_TEXTS, "E404"),
    ("text not a string", {"text": 123}, 422, "field 'text' must be a string", "E405"),
    ("text null and no texts", {"text": None}, 422, errors.TEXT_XOR_TEXTS, "E404"),
    ("texts a string", {"texts": "abc"}, 422, "field 'texts' must be a list of strings", "E405"),
    ("texts item not a string", {"texts": ["a", 1]}, 422, "field 'texts[1]' must be a string", "E405"),
    ("explain not a bool", {"text": "a", "explain": "yes"}, 422, "field 'explain' must be a boolean", "E405"),
    ("model not a string", {"text": "a", "model": 3}, 422, "field 'model' must be a string", "E405"),
    ("unknown field", {"text": "a", "explian": True}, 422, "unknown field 'explian'", "E427"),
    ("not an object", ["a", "b"], 422, errors.NOT_AN_OBJECT, "E424"),
    ("unknown motive", {"text": "a", "explain": True, "explain_motive": "fun"}, 422,
     "unknown explain_motive: fun", "E410"),
    ("unknown version", {"text": "a", "model": "v9999-20990101"}, 404,
     "unknown model version or alias: v9999-20990101", "E409"),
    ("unknown alias", {"text": "a", "model": "staging"}, 404, "unknown model version or alias: staging", "E409"),
    ("path traversal", {"text": "a", "model": "../../etc"}, 404, "unknown model version or alias: ../../etc", "E409"),
    ("empty model", {"text": "a", "model": ""}, 404, "unknown model version or alias: ", "E409"),
    ("invalid json", b'{"text": "a"', 400, errors.INVALID_JSON, "E406"),
    ("empty body", b"", 400, errors.INVALID_JSON, "E406"),
    ("invalid utf-8", b'{"text": "\xff\xfe\xfd"}', 400, errors.INVALID_UTF8, "E407"),
    ("lone surrogate", b'{"text": "\\ud800abc"}', 422, errors.INVALID_UNICODE.format(field="text"), "E429"),
]


@pytest.mark.parametrize(("name", "body", "status", "detail", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, name, body, status, detail, code) -> None:
    res = _post(client, body)
    assert res.status_code == status, res.text
    assert res.json() == {"detail": detail, "code": code}
    assert errors.CATALOG_BY_CODE[code].status == status


def test_error_strings_are_the_documented_ones() -> None:
    assert errors.EMPTY_TEXT == "text must not be empty or whitespace"
    assert errors.TEXT_TOO_LONG.format(max=2000) == "text exceeds 2000 characters"
    assert errors.BATCH_TOO_LARGE.format(max=64) == "batch exceeds 64 texts"
    assert errors.INVALID_JSON == "request body is not valid JSON"
    assert errors.INVALID_UTF8 == "request body is not valid UTF-8"
    assert errors.UNKNOWN_MODEL.format(ref="x") == "unknown model version or alias: x"
    assert errors.INTERNAL == "internal error"


def test_body_over_the_limit(client) -> None:
    body = json.dumps({"text": "a" * 1_000_001}).encode()
    res = _post(client, body)
    assert res.status_code == 413
    assert res.json() == {"detail": "request body exceeds 1000000 bytes", "code": "E408"}


def test_body_over_the_limit_without_content_length(client) -> None:
    """A chunked body is counted as it streams in: no Content-Length to trust."""
    def chunks():
        yield b'{"text": "'
        for _ in range(20):
            yield b"a" * 60_000
        yield b'"}'

    res = client.post("/predict", content=chunks(), headers=J)
    assert res.status_code == 413
    assert res.json() == {"detail": "request body exceeds 1000000 bytes", "code": "E408"}


def test_non_json_content_type_is_refused(client) -> None:
    res = client.post("/predict", content=b'{"text": "a"}', headers={"content-type": "text/plain"})
    assert res.status_code == 415
    assert res.json() == {"detail": errors.UNSUPPORTED_MEDIA_TYPE, "code": "E411"}


def test_json_content_types_are_read(client) -> None:
    for value in ("application/json", "application/json; charset=utf-8", "Application/JSON", "application/ld+json"):
        res = client.post("/predict", content='{"text": "转发抽奖"}'.encode(), headers={"content-type": value})
        assert res.status_code == 200, (value, res.text)


def test_malformed_version_never_reaches_the_registry(client, store, monkeypatch) -> None:
    seen: list[object] = []
    original = store.registry.resolve
    monkeypatch.setattr(store.registry, "resolve", lambda name, ref=None: seen.append(ref) or original(name, ref))
    for ref in ("../../etc", "/etc/passwd", "v0001-2026..", "..\\..\\x", "a" * 500):
        res = _post(client, {"text": "a", "model": ref})
        assert res.status_code == 404
        assert res.json()["detail"].startswith("unknown model version or alias: ")
    assert seen == []


def test_unexpected_exception_is_a_bare_500(app, caplog) -> None:
    from fastapi.testclient import TestClient

    from serving.routes import get_store

    class Broken:
        name = "sharelens"

        def get(self, ref=None):
            raise RuntimeError("secret internals /etc/shadow")

    app.dependency_overrides[get_store] = lambda: Broken()
    res = TestClient(app).post("/predict", json={"text": "转发抽奖"})
    assert res.status_code == 500
    assert res.json() == {"detail": "internal error", "code": "E500"}
    assert "secret" not in res.text and "Traceback" not in res.text
    assert "secret internals" in caplog.text  # logged for us, not shown to them


def test_unknown_route_and_method(client) -> None:
    assert client.get("/nope").json() == {"detail": errors.NOT_FOUND, "code": "E437"}
    res = client.get("/predict")
    assert res.status_code == 405
    assert res.json() == {"detail": errors.METHOD_NOT_ALLOWED, "code": "E438"}


def test_errors_are_counted_by_code(client) -> None:
    _post(client, {"text": ""})
    _post(client, b"{")
    metrics = client.get("/metrics").text
    assert 'sharelens_errors_total{code="E401"} 1.0' in metrics
    assert 'sharelens_errors_total{code="E406"} 1.0' in metrics


# -- the catalog: one entry per code, every code in the source in it, all of it in the README -------
REPO = Path(__file__).resolve().parents[2]


def _codes_in_source() -> dict[str, list[str]]:
    """Every error code serving/ and sharelens/ raise, answer or print: string constants that are
    a code ("E401"), or that open a CLI error line (f"Error E430: ...")."""
    found: dict[str, list[str]] = {}
    for package in ("serving", "sharelens"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    m = re.fullmatch(r"(E\d{3})", node.value) or re.match(r"Error (E\d{3}):", node.value)
                    if m:
                        found.setdefault(m[1], []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_code_in_the_source_is_in_the_catalog() -> None:
    found = _codes_in_source()
    assert {"E401", "E220", "E430", "E500"} <= set(found)  # the scan sees all three kinds of use
    missing = {code: where for code, where in found.items() if code not in errors.CATALOG_BY_CODE}
    assert missing == {}


def test_the_catalog_lists_each_code_once() -> None:
    codes = [e.code for e in errors.CATALOG]
    assert len(codes) == len(set(codes)), [c for c in codes if codes.count(c) > 1]
    assert codes == sorted(codes)
    for entry in errors.CATALOG:
        assert re.fullmatch(r"E\d{3}", entry.code) and entry.detail and entry.meaning, entry
        assert (entry.status is not None) == (entry.kind == "api"), entry
    api = [e for e in errors.CATALOG if e.kind == "api"]
    details = [e.detail for e in api]
    assert len(details) == len(set(details)), "two API codes share a detail: one of them is not a failure of its own"


def test_the_readme_shows_the_catalog() -> None:
    """Regenerate the table with `python -m serving.errors` after changing the catalog."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = errors.catalog_markdown()
    assert table in readme
    for entry in errors.CATALOG:
        assert readme.count(f"| `{entry.code}` |") == 1, entry.code


def test_framework_validation_errors_get_the_code_of_their_kind() -> None:
    """FastAPI's own RequestValidationError (no route of ours lets it parse a body today) is
    rendered like our checks: one sentence, one code per kind of failure."""
    cases = [([{"type": "extra_forbidden", "loc": ("body", "x")}], "E427", "unknown field 'x'"),
             ([{"type": "json_invalid", "loc": ("body",)}], "E406", errors.INVALID_JSON),
             ([{"type": "int_type", "loc": ("query", "n")}], "E405", "field 'n' must be an integer"),
             ([{"type": "missing", "loc": ("body", "version"), "msg": "Field required"}], "E428",
              "field 'version': Field required"),
             ([], "E428", "field 'body': invalid value")]
    for found, code, detail in cases:
        exc = errors.validation_error(found)
        assert (exc.code, exc.detail, exc.status) == (code, detail, errors.CATALOG_BY_CODE[code].status)


def test_other_framework_http_errors_keep_their_status() -> None:
    exc = errors.http_error(418, "I'm a teapot")
    assert (exc.status, exc.code, exc.detail) == (418, "E439", "request refused: I'm a teapot")
