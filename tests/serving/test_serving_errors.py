"""Bad input never crashes and never leaks a trace: exact status and exact detail for each case."""

from __future__ import annotations

import json

import pytest

from serving import errors

J = {"content-type": "application/json"}


def _post(client, body, headers=J):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/predict", content=raw, headers=headers)


CASES = [
    ("empty", {"text": ""}, 422, errors.EMPTY_TEXT),
    ("whitespace", {"text": "  \n\t\u3000 "}, 422, errors.EMPTY_TEXT),
    ("zero-width only", {"text": "\u200b\u200b"}, 422, errors.EMPTY_TEXT),
    ("zero-width and spaces", {"text": "\u200b \u3000\u200b \ufeff"}, 422, errors.EMPTY_TEXT),
    ("blank in batch", {"texts": ["正常的一条", " "]}, 422, errors.EMPTY_TEXT),
    ("too long", {"text": "字" * 2001}, 413, "text exceeds 2000 characters"),
    ("batch too large", {"texts": ["一条微博"] * 65}, 413, "batch exceeds 64 texts"),
    ("explain batch too large", {"texts": ["一条微博"] * 17, "explain": True}, 413,
     "explain is limited to 16 texts per request"),
    ("empty batch", {"texts": []}, 422, errors.EMPTY_BATCH),
    ("both", {"text": "a", "texts": ["b"]}, 422, errors.TEXT_XOR_TEXTS),
    ("neither", {"explain": True}, 422, errors.TEXT_XOR_TEXTS),
    ("empty object", {}, 422, errors.TEXT_XOR_TEXTS),
    ("text not a string", {"text": 123}, 422, "field 'text' must be a string"),
    ("text null and no texts", {"text": None}, 422, errors.TEXT_XOR_TEXTS),
    ("texts a string", {"texts": "abc"}, 422, "field 'texts' must be a list of strings"),
    ("texts item not a string", {"texts": ["a", 1]}, 422, "field 'texts[1]' must be a string"),
    ("explain not a bool", {"text": "a", "explain": "yes"}, 422, "field 'explain' must be a boolean"),
    ("model not a string", {"text": "a", "model": 3}, 422, "field 'model' must be a string"),
    ("unknown field", {"text": "a", "explian": True}, 422, "unknown field 'explian'"),
    ("not an object", ["a", "b"], 422, errors.NOT_AN_OBJECT),
    ("unknown motive", {"text": "a", "explain": True, "explain_motive": "fun"}, 422,
     "unknown explain_motive: fun"),
    ("unknown version", {"text": "a", "model": "v9999-20990101"}, 404,
     "unknown model version or alias: v9999-20990101"),
    ("unknown alias", {"text": "a", "model": "staging"}, 404, "unknown model version or alias: staging"),
    ("path traversal", {"text": "a", "model": "../../etc"}, 404, "unknown model version or alias: ../../etc"),
    ("empty model", {"text": "a", "model": ""}, 404, "unknown model version or alias: "),
    ("invalid json", b'{"text": "a"', 400, errors.INVALID_JSON),
    ("empty body", b"", 400, errors.INVALID_JSON),
    ("invalid utf-8", b'{"text": "\xff\xfe\xfd"}', 400, errors.INVALID_UTF8),
    ("lone surrogate", b'{"text": "\\ud800abc"}', 422, errors.INVALID_UNICODE),
]


@pytest.mark.parametrize(("name", "body", "status", "detail"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, name, body, status, detail) -> None:
    res = _post(client, body)
    assert res.status_code == status, res.text
    assert res.json() == {"detail": detail}


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
    assert res.json() == {"detail": "request body exceeds 1000000 bytes"}


def test_body_over_the_limit_without_content_length(client) -> None:
    """A chunked body is counted as it streams in: no Content-Length to trust."""
    def chunks():
        yield b'{"text": "'
        for _ in range(20):
            yield b"a" * 60_000
        yield b'"}'

    res = client.post("/predict", content=chunks(), headers=J)
    assert res.status_code == 413
    assert res.json() == {"detail": "request body exceeds 1000000 bytes"}


def test_non_json_content_type_is_refused(client) -> None:
    res = client.post("/predict", content=b'{"text": "a"}', headers={"content-type": "text/plain"})
    assert res.status_code == 415
    assert res.json() == {"detail": errors.UNSUPPORTED_MEDIA_TYPE}


def test_missing_content_type_is_read_as_json(client) -> None:
    res = client.post("/predict", content='{"text": "转发抽奖"}'.encode())
    assert res.status_code == 200, res.text


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
    assert res.json() == {"detail": "internal error"}
    assert "secret" not in res.text and "Traceback" not in res.text
    assert "secret internals" in caplog.text  # logged for us, not shown to them


def test_unknown_route_and_method(client) -> None:
    assert client.get("/nope").json() == {"detail": "Not Found"}
    res = client.get("/predict")
    assert res.status_code == 405
    assert isinstance(res.json()["detail"], str)


def test_errors_are_counted_by_code(client) -> None:
    _post(client, {"text": ""})
    _post(client, b"{")
    metrics = client.get("/metrics").text
    assert 'sharelens_errors_total{code="E401"} 1.0' in metrics
    assert 'sharelens_errors_total{code="E406"} 1.0' in metrics
