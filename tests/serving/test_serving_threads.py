"""Where the cores go: model calls on single-threaded model threads (one per core by default),
explanations on several threads of their own, memory handed back after explanations."""

from __future__ import annotations

import threading

import pytest
import torch
from fastapi.testclient import TestClient

from serving import settings as settings_module
from serving.explain import Explainer, set_thread_count
from serving.main import create_app
from serving.memory import trim
from serving.settings import Settings


def test_thread_settings_share_the_cores_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 4)
    s = Settings()
    assert (s.resolved_model_threads(), s.resolved_torch_threads(), s.resolved_explain_threads()) == (4, 1, 4)
    s = Settings(workers=2)  # two server processes share the 4 cores
    assert (s.resolved_model_threads(), s.resolved_torch_threads(), s.resolved_explain_threads()) == (2, 1, 2)
    s = Settings(model_threads=1)
    assert (s.resolved_model_threads(), s.resolved_torch_threads()) == (1, 4)
    s = Settings(model_threads=2, torch_threads=3, explain_threads=1)
    assert (s.resolved_model_threads(), s.resolved_torch_threads(), s.resolved_explain_threads()) == (2, 3, 1)


def test_thread_counts_are_per_thread() -> None:
    """What the design rests on: OpenMP keeps torch's intra-op count per thread, so the explainer
    can use two threads without changing the batcher's single-threaded model threads."""
    seen: dict[str, int] = {}
    ready, changed = threading.Event(), threading.Event()

    def model_thread() -> None:
        set_thread_count(1)
        torch.ones(64, 64) @ torch.ones(64, 64)
        ready.set()
        assert changed.wait(10)
        seen["model"] = torch.get_num_threads()

    def explain_thread() -> None:
        assert ready.wait(10)
        set_thread_count(2)
        seen["explain"] = torch.get_num_threads()
        changed.set()

    threads = [threading.Thread(target=model_thread), threading.Thread(target=explain_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"model": 1, "explain": 2}


def test_the_app_runs_model_calls_with_its_torch_threads(serving_models_dir, store) -> None:
    app = create_app(Settings(models_dir=serving_models_dir, model_threads=2, torch_threads=1), store)
    predictor = store.get(None)
    seen: list[tuple[str, int]] = []
    original = predictor.predict

    def spy(texts, batch_size=32):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return original(texts, batch_size=batch_size)

    predictor.predict = spy
    try:
        set_thread_count(2)  # what the test's own thread has must not matter
        res = TestClient(app).post("/predict", json={"text": "转发这条微博"})
    finally:
        del predictor.predict
        app.state.batcher.close(10)
        set_thread_count(1)
    assert res.status_code == 200
    assert seen and all(name.startswith("sharelens-model") and n == 1 for name, n in seen)
    assert app.state.batcher.workers == 2


def test_the_explainer_sets_its_threads_and_trims_memory(store, monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr("serving.explain.trim", lambda: trims.append(1) or True)
    predictor = store.get(None)
    pred = predictor.predict(["转发抽奖，关注并转发"])[0]
    out: dict[str, int] = {}

    def run() -> None:
        Explainer(steps=2, threads=2).explain(predictor, "转发抽奖，关注并转发", pred, pred.motive)
        out["threads"] = torch.get_num_threads()

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert out == {"threads": 2} and trims == [1]


def test_trim_reaches_glibc_on_linux() -> None:
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert trim() is True
