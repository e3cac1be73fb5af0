"""Health, readiness, the model list, metrics, the page's files, CORS and the API key."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from serving import errors
from serving.main import create_app
from serving.settings import Settings
from serving.store import ModelStore

STATIC = Path(__file__).resolve().parents[2] / "serving" / "static"


def test_healthz(client) -> None:
    res = client.get("/healthz")
    assert res.status_code == 200 and res.json() == {"status": "ok"}


def test_readyz_before_and_after_load(serving_models_dir, versions) -> None:
    store = ModelStore(serving_models_dir, "sharelens")
    client = TestClient(create_app(Settings(models_dir=serving_models_dir), store))  # no lifespan yet
    res = client.get("/readyz")
    assert res.status_code == 503 and res.json() == {"detail": errors.NOT_READY, "code": "E436"}
    assert client.get("/healthz").status_code == 200
    store.load_default()
    res = client.get("/readyz")
    assert res.status_code == 200
    assert res.json() == {"status": "ready", "model": {"name": "sharelens", "version": versions["production"]},
                          "backend": "fp32", "runtime": "lean"}


def test_lifespan_loads_the_default_model(serving_models_dir, versions) -> None:
    app = create_app(Settings(models_dir=serving_models_dir))
    with TestClient(app) as client:
        assert app.state.store.wait_ready(60)
        assert client.get("/readyz").json()["model"]["version"] == versions["production"]
        assert 'sharelens_model_load_seconds{model_version="' in client.get("/metrics").text


def test_readyz_when_the_model_cannot_load(tmp_path) -> None:
    app = create_app(Settings(models_dir=tmp_path))  # no registry at all
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while app.state.store.load_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 200
        res = client.get("/readyz")
        assert res.status_code == 503 and res.json() == {"detail": errors.MODEL_UNAVAILABLE, "code": "E420"}
        res = client.post("/predict", json={"text": "转发抽奖"})
        assert res.status_code == 503 and res.json() == {"detail": errors.MODEL_UNAVAILABLE, "code": "E420"}


def test_models(client, versions) -> None:
    body = client.get("/models").json()
    assert body["name"] == "sharelens"
    assert body["serving"] == versions["production"]
    assert body["aliases"] == versions and {"production", "latest", "canary"} <= set(body["aliases"])
    assert [v["version"] for v in body["versions"]] == sorted(set(versions.values()))
    assert versions["production"] in body["loaded"]


def test_metrics_count_requests_and_batches(client, versions) -> None:
    assert client.post("/predict", json={"texts": ["转发抽奖", "暴雨预警"]}).status_code == 200
    res = client.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    text = res.text
    assert 'sharelens_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert re.search(r'sharelens_http_request_duration_seconds_count\{method="POST",route="/predict"\} 1\.0', text)
    v = versions["production"]
    assert f'sharelens_predict_batch_size_sum{{model_version="{v}"}} 2.0' in text
    assert f'sharelens_predicted_texts_total{{model_version="{v}"}} 2.0' in text


def test_metrics_label_unknown_paths_as_one_route(client) -> None:
    for i in range(3):
        client.get(f"/random/{i}")
    text = client.get("/metrics").text
    assert 'route="unmatched",status="404"} 3.0' in text
    assert "/random/" not in text


def test_page_and_static_files(client) -> None:
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    for element_id in ("text", "explain", "motives", "tier", "highlighted", "cmp-a", "cmp-b", "csv-file", "history",
                       "api-key"):
        assert f'id="{element_id}"' in res.text
    assert "default-src 'self'" in res.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


def test_page_loads_nothing_from_outside() -> None:
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path
        assert "@import" not in text and "url(http" not in text, path


def test_cors_closed_by_default(client) -> None:
    res = client.options("/predict", headers={"Origin": "https://evil.example",
                                              "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in res.headers


def test_cors_opens_to_configured_origins(serving_models_dir, store) -> None:
    app = create_app(Settings(models_dir=serving_models_dir, cors_origins=["https://editor.example"]), store)
    res = TestClient(app).options("/predict", headers={"Origin": "https://editor.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert res.headers["access-control-allow-origin"] == "https://editor.example"


def test_api_key(serving_models_dir, store) -> None:
    client = TestClient(create_app(Settings(models_dir=serving_models_dir, api_key="s3cret"), store))
    body = {"text": "转发抽奖"}
    res = client.post("/predict", json=body)
    assert res.status_code == 401 and res.json() == {"detail": errors.UNAUTHORIZED, "code": "E412"}
    assert client.post("/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/models").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_the_request(client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/predict"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"text", "texts", "context", "posts", "explain", "explain_motive",
                                        "explain_method", "model"}
    assert schema["examples"] and schema["properties"]["text"]["description"]
    assert {"200", "404", "413", "422"} <= set(op["responses"])
    # every context field is documented, with an example
    context = schema["$defs"]["ContextIn"]["properties"]
    assert set(context) == {"channel", "vip", "verified", "followers", "posted_at", "author_history"}
    for name, field in context.items():
        assert field.get("description"), name
        assert field.get("examples") or name == "author_history", name
    assert any("context" in ex for ex in schema["examples"])
