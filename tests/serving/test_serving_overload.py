"""Overload: beyond max_queue texts in flight /predict answers 429 at once, with Retry-After and a
fixed detail, instead of letting every client time out. Deterministic: the model is a test double
that holds its first call until the test lets it go."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from serving import errors
from serving.main import create_app
from serving.routes import get_store
from serving.settings import Settings


class Held:
    """The real predictor, except that `predict` waits until the test releases it."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def predict(self, texts, batch_size: int = 32):
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        return self._inner.predict(texts, batch_size=batch_size)


@pytest.fixture
def held(store) -> Held:
    return Held(store.get(None))


def _app(serving_models_dir, held: Held, **settings):
    app = create_app(Settings(models_dir=serving_models_dir, batch_window_ms=0, **settings))
    app.dependency_overrides[get_store] = lambda: SimpleNamespace(name="sharelens", get=lambda ref=None: held)
    return app


def test_predict_beyond_max_queue_is_429_with_retry_after(serving_models_dir, held) -> None:
    app = _app(serving_models_dir, held, max_queue=2, max_batch=2, retry_after_s=3)
    client = TestClient(app)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", json={"texts": ["转发抽奖", "暴雨预警"]})
        assert held.entered.wait(30)  # two texts admitted and in the model: the queue is full
        res = client.post("/predict", json={"text": "求扩散"})
        assert res.status_code == 429
        assert res.json() == {"detail": "server busy, retry later", "code": "E416"} == {"detail": errors.OVERLOADED, "code": "E416"}
        assert res.headers["retry-after"] == "3"
        held.release.set()
        assert first.result(30).status_code == 200
    assert client.post("/predict", json={"text": "求扩散"}).status_code == 200  # room again
    metrics = client.get("/metrics").text
    assert 'sharelens_rejected_requests_total{queue="predict"} 1.0' in metrics
    assert 'sharelens_errors_total{code="E416"} 1.0' in metrics
    assert 'sharelens_http_requests_total{method="POST",route="/predict",status="429"} 1.0' in metrics
    assert 'sharelens_queue_depth_texts{queue="predict"} 0.0' in metrics
    app.state.batcher.close(10)


def test_explanations_have_their_own_bound(serving_models_dir, held) -> None:
    app = _app(serving_models_dir, held, max_explain_queue=1)
    client = TestClient(app)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", json={"text": "转发抽奖", "explain": True})
        assert held.entered.wait(30)
        res = client.post("/predict", json={"text": "求扩散", "explain": True})
        assert res.status_code == 429 and res.json() == {"detail": errors.OVERLOADED, "code": "E416"}
        assert res.headers["retry-after"] == "1"
        held.release.set()
        assert first.result(30).status_code == 200
    assert 'sharelens_rejected_requests_total{queue="explain"} 1.0' in client.get("/metrics").text
    app.state.batcher.close(10)


def test_the_schema_documents_429(client) -> None:
    assert "429" in client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]


def test_lifespan_shutdown_answers_what_the_batcher_still_holds(serving_models_dir, held) -> None:
    """Shutdown while one batch is in the model and two requests wait behind it: the lifespan
    shutdown returns only once all three are answered; a request after it is refused with 503.
    One event loop drives both (TestClient would stop its loop under the pending requests)."""
    store = SimpleNamespace(name="sharelens", get=lambda ref=None: held, load_default=lambda: held,
                            default_version=None)
    # registry_poll_s 0: this stand-in store has no registry for the watcher to follow
    app = create_app(Settings(models_dir=serving_models_dir, batch_window_ms=0, registry_poll_s=0),
                     store)  # type: ignore[arg-type]
    batcher = app.state.batcher

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sharelens") as client:
            async with app.router.lifespan_context(app):
                tasks = [asyncio.create_task(client.post("/predict", json={"text": "转发抽奖"}))]
                assert await asyncio.to_thread(held.entered.wait, 30)
                tasks += [asyncio.create_task(client.post("/predict", json={"text": t})) for t in ("暴雨预警", "求扩散")]
                while batcher.gate.depth < 3:  # both admitted behind the held batch
                    await asyncio.sleep(0.01)
                threading.Timer(0.3, held.release.set).start()
            # The lifespan shutdown has returned: the worker drained the queue and stopped.
            assert batcher.close(0)
            responses = await asyncio.gather(*tasks)
            responses.append(await client.post("/predict", json={"text": "转发"}))
            return responses

    *answered, late = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert late.status_code == 503 and late.json() == {"detail": errors.SHUTTING_DOWN, "code": "E419"}
