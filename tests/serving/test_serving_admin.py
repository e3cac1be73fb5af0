"""Admin endpoints: always behind a key, reload and alias moves that swap the model atomically,
refuse a corrupted bundle (the old model keeps serving), and never turn names into paths."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving import errors
from serving.main import create_app
from serving.settings import Settings
from serving.store import ModelStore
from sharelens.registry import Registry

KEY = {"X-API-Key": "s3cret"}


def _client(models_dir: Path, store: ModelStore | None = None, **settings) -> TestClient:
    return TestClient(create_app(Settings(models_dir=models_dir, **settings), store))


# -- who may call ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/admin/reload", "/admin/aliases"])
def test_admin_is_disabled_without_a_configured_key(serving_models_dir, store, path) -> None:
    res = _client(serving_models_dir, store).post(path, json={"alias": "production", "version": "v0001-20260101"},
                                                  headers=KEY)
    assert res.status_code == 403
    assert res.json() == {"detail": "admin endpoints are disabled: set SHARELENS_API_KEY", "code": "E415"}


def test_admin_needs_the_key(private_models_dir) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = _client(private_models_dir, store, api_key="s3cret")
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        res = client.post("/admin/reload", headers=headers)
        assert res.status_code == 401 and res.json() == {"detail": errors.UNAUTHORIZED, "code": "E412"}
        assert res.headers["www-authenticate"] == "Bearer"
    assert client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_key_protects_everything_but_the_page_and_the_probes(serving_models_dir, store) -> None:
    client = _client(serving_models_dir, store, api_key="s3cret")
    for method, path in (("POST", "/predict"), ("GET", "/models"), ("GET", "/metrics"), ("GET", "/docs"),
                         ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/no-such-route"),
                         ("POST", "/admin/reload")):
        res = client.request(method, path, json={"text": "转发抽奖"})
        assert res.status_code == 401, path
        assert res.json() == {"detail": errors.UNAUTHORIZED, "code": "E412"}
        assert client.request(method, path, json={"text": "转发抽奖"}, headers=KEY).status_code != 401, path
    for path in ("/", "/healthz", "/readyz", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    metrics = client.get("/metrics", headers=KEY).text
    assert 'sharelens_errors_total{code="E412"} 8.0' in metrics
    # Refused before routing, still counted under the route (an unknown path stays "unmatched").
    assert 'sharelens_http_requests_total{method="POST",route="/predict",status="401"} 1.0' in metrics
    assert 'sharelens_http_requests_total{method="GET",route="/docs",status="401"} 1.0' in metrics
    assert 'sharelens_http_requests_total{method="GET",route="unmatched",status="401"} 1.0' in metrics


def test_cors_stays_closed_for_simple_requests_too(client) -> None:
    res = client.post("/predict", json={"text": "转发抽奖"}, headers={"Origin": "https://evil.example"})
    assert res.status_code == 200
    assert "access-control-allow-origin" not in res.headers


# -- what they do ---------------------------------------------------------------------------------
def test_reload_picks_up_a_moved_alias(private_models_dir, versions) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = _client(private_models_dir, store, api_key="s3cret")
    Registry(private_models_dir).set_alias("sharelens", "production", versions["canary"])
    # Not reloaded yet: the pinned default keeps answering.
    assert client.post("/predict", json={"text": "转发抽奖"}, headers=KEY).json()["model"]["version"] == \
        versions["production"]
    res = client.post("/admin/reload", headers=KEY)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "reloaded" and body["previous"] == versions["production"]
    assert body["model"] == {"name": "sharelens", "version": versions["canary"]} and body["seconds"] >= 0
    assert client.post("/predict", json={"text": "转发抽奖"}, headers=KEY).json()["model"]["version"] == \
        versions["canary"]
    assert client.get("/readyz").json()["model"]["version"] == versions["canary"]
    assert client.get("/models", headers=KEY).json()["serving"] == versions["canary"]


def test_alias_move_refuses_a_corrupted_bundle_and_keeps_the_alias(private_models_dir, versions, corrupt_copy) -> None:
    broken = corrupt_copy(private_models_dir, versions["production"])
    store = ModelStore(private_models_dir)
    store.load_default()
    client = _client(private_models_dir, store, api_key="s3cret")
    res = client.post("/admin/aliases", json={"alias": "production", "version": broken}, headers=KEY)
    assert res.status_code == 409
    assert res.json() == {"detail": f"reload refused: {broken} could not be loaded (E216: weights do not match "
                                    "their checksum); the current model keeps serving", "code": "E417"}
    assert str(private_models_dir) not in res.text  # the server's paths stay in its log
    assert Registry(private_models_dir).entry("sharelens")["aliases"]["production"] == versions["production"]
    assert store.default_version == versions["production"]
    metrics = client.get("/metrics", headers=KEY).text
    assert f'sharelens_model_reloads_total{{model_version="{broken}",result="failure"}} 1.0' in metrics


def test_alias_move_to_another_alias_leaves_the_default(private_models_dir, versions) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = _client(private_models_dir, store, api_key="s3cret")
    res = client.post("/admin/aliases", json={"alias": "staging", "version": versions["canary"]}, headers=KEY)
    assert res.status_code == 200, res.text
    assert res.json()["alias"] == "staging" and res.json()["model"]["version"] == versions["production"]
    assert Registry(private_models_dir).entry("sharelens")["aliases"]["staging"] == versions["canary"]
    assert client.post("/predict", json={"text": "转发", "model": "staging"},
                       headers=KEY).json()["model"]["version"] == versions["canary"]


@pytest.mark.parametrize(("body", "status", "detail", "code"), [
    ({"alias": "production", "version": "../../etc"}, 404, "unknown model version or alias: ../../etc", "E409"),
    ({"alias": "production", "version": "v0001-20260101/../../x"}, 404,
     "unknown model version or alias: v0001-20260101/../../x", "E409"),
    ({"alias": "production", "version": "latest"}, 404, "unknown model version or alias: latest", "E409"),
    ({"alias": "../x", "version": "v0001-20260101"}, 422, "invalid alias: ../x", "E418"),
    ({"alias": "v0002-20260101", "version": "v0001-20260101"}, 422, "invalid alias: v0002-20260101", "E418"),
    ({"alias": "Production", "version": "v0001-20260101"}, 422, "invalid alias: Production", "E418"),
    ({"alias": "production"}, 422, "field 'version': Field required", "E428"),
    ({"alias": "production", "version": 1}, 422, "field 'version' must be a string", "E405"),
    ({"alias": "production", "version": "v0001-20260101", "x": 1}, 422, "unknown field 'x'", "E427"),
    (["production"], 422, errors.NOT_AN_OBJECT, "E424"),
    (b"{", 400, errors.INVALID_JSON, "E406"),
    (b'{"alias": "' + b"a" * 5000 + b'"}', 413, "request body exceeds 4096 bytes", "E408"),
])
def test_bad_alias_requests_never_reach_the_filesystem(tmp_path, body, status, detail, code) -> None:
    store = ModelStore(tmp_path, loader=lambda p: pytest.fail(f"tried to load {p}"))
    store.registry.read = lambda: pytest.fail("the registry was read")  # type: ignore[method-assign]
    client = _client(tmp_path, store, api_key="s3cret")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    res = client.post("/admin/aliases", content=raw, headers={**KEY, "content-type": "application/json"})
    assert res.status_code == status, res.text
    assert res.json() == {"detail": detail, "code": code}


def test_alias_to_an_unregistered_version_is_404(private_models_dir) -> None:
    store = ModelStore(private_models_dir, loader=lambda p: pytest.fail(f"tried to load {p}"))
    client = _client(private_models_dir, store, api_key="s3cret")
    res = client.post("/admin/aliases", json={"alias": "production", "version": "v0999-20260101"}, headers=KEY)
    assert res.status_code == 404
    assert res.json() == {"detail": "unknown model version or alias: v0999-20260101", "code": "E409"}


# -- under load -----------------------------------------------------------------------------------
def test_model_swaps_under_load_drop_no_request(private_models_dir, versions, corrupt_copy) -> None:
    """Clients keep sending while production is pointed at a corrupted copy (refused twice: by an
    alias move, and by a reload after the registry was edited behind the server's back) and then
    moved to the canary. Every request succeeds, and the version changes only with the reload."""
    old, new = versions["production"], versions["canary"]
    broken = corrupt_copy(private_models_dir, old)
    store = ModelStore(private_models_dir)
    store.load_default()
    # explain_client_rate 0: the explaining client loops as fast as it can, and this test is about
    # swaps, not about its share of explanations (tests/serving/test_serving_explain_control.py)
    app = create_app(Settings(models_dir=private_models_dir, api_key="s3cret", batch_window_ms=2,
                              explain_client_rate=0), store)
    admin = TestClient(app)
    stop = threading.Event()
    seen: list[tuple[float, float, int, str | None]] = []  # (sent, answered, status, version)

    def client_loop(i: int) -> None:
        client = TestClient(app)
        while not stop.is_set():
            body = {"text": f"转发抽奖第{i}轮", "explain": i == 0}
            sent = time.monotonic()
            res = client.post("/predict", json=body, headers=KEY)
            version = res.json()["model"]["version"] if res.status_code == 200 else None
            seen.append((sent, time.monotonic(), res.status_code, version))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        res = admin.post("/admin/aliases", json={"alias": "production", "version": broken}, headers=KEY)
        assert res.status_code == 409 and "(E216: weights do not match their checksum)" in res.json()["detail"]
        Registry(private_models_dir).set_alias("sharelens", "production", broken)
        res = admin.post("/admin/reload", headers=KEY)
        assert res.status_code == 409 and res.json()["detail"].startswith(f"reload refused: {broken} ")
        time.sleep(0.3)
        swap_started = time.monotonic()
        res = admin.post("/admin/aliases", json={"alias": "production", "version": new}, headers=KEY)
        swap_done = time.monotonic()
        assert res.status_code == 200, res.text
        assert res.json()["model"]["version"] == new and res.json()["previous"] == old
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    app.state.batcher.close(10)

    assert seen and all(status == 200 for _, _, status, _ in seen), [s for s in seen if s[2] != 200][:3]
    assert {v for *_, v in seen} == {old, new}
    assert all(v == old for sent, answered, _, v in seen if answered < swap_started)
    assert all(v == new for sent, answered, _, v in seen if sent > swap_done)
    assert sum(1 for sent, *_ in seen if sent > swap_done) > 0
    metrics = admin.get("/metrics", headers=KEY).text
    assert f'sharelens_model_reloads_total{{model_version="{broken}",result="failure"}} 2.0' in metrics
    assert f'sharelens_model_reloads_total{{model_version="{new}",result="success"}} 1.0' in metrics
