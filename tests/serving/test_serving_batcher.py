"""The batcher: grouping by model, the text and token budgets, arrival order, failures, draining,
and through the API: concurrent single-text clients share model calls and get exactly the
answers an unbatched call gives."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving import errors, service
from serving.admission import Gate
from serving.batcher import Batcher, plan_forwards
from serving.errors import ApiError
from serving.explain import Explainer
from serving.main import create_app
from serving.settings import Settings


class Recorder:
    """A predictor double: records each model call; the first call can be held until released."""

    def __init__(self, version: str, hold_first: bool = False, fail: bool = False) -> None:
        self.version = version
        self.calls: list[tuple[list[str], int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail = fail

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        self.calls.append((list(texts), batch_size))
        self.entered.set()
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("model exploded")
        return [f"{self.version}:{t}" for t in texts]


def _held_batcher(**kw) -> tuple[Batcher, Recorder]:
    """A batcher whose first model call is in progress and held, so the queue fills behind it."""
    batcher = Batcher(window_ms=0, **kw)
    blocker = Recorder("v0000-00000000", hold_first=True)
    batcher.submit(blocker, ["first"])
    assert blocker.entered.wait(10)
    return batcher, blocker


def test_batches_group_by_model_and_respect_max_texts() -> None:
    batcher, blocker = _held_batcher(max_texts=4)
    a, b = Recorder("v0001-20260101"), Recorder("v0002-20260101")
    futures = [batcher.submit(a, ["a1"]), batcher.submit(b, ["b1"]), batcher.submit(a, ["a2", "a3"]),
               batcher.submit(a, ["a4", "a5"]), batcher.submit(b, ["b2"])]
    blocker.release.set()
    results = [f.result(10) for f in futures]
    assert results == [["v0001-20260101:a1"], ["v0002-20260101:b1"], ["v0001-20260101:a2", "v0001-20260101:a3"],
                       ["v0001-20260101:a4", "v0001-20260101:a5"], ["v0002-20260101:b2"]]
    # a1+a2+a3 fill 3 of 4; a4+a5 would make 5: they wait for the next batch, after b's.
    assert [c[0] for c in a.calls] == [["a1", "a2", "a3"], ["a4", "a5"]]
    assert [c[0] for c in b.calls] == [["b1", "b2"]]
    assert batcher.gate.depth == 0
    assert batcher.close(10)


def test_token_budget_sums_tokens_and_each_call_stays_within_it() -> None:
    # A double without a tokenizer counts len(text) + 2 tokens: "aaaa" -> 6, "bb" -> 4, "c" -> 3.
    batcher, blocker = _held_batcher(max_tokens=10)
    p = Recorder("v0001-20260101")
    f1, f2, f3 = batcher.submit(p, ["aaaa"]), batcher.submit(p, ["bb"]), batcher.submit(p, ["c"])
    f4 = batcher.submit(p, ["cccc", "dddd", "eeee"])  # 18 tokens: over budget alone, runs alone
    blocker.release.set()
    for f in (f1, f2, f3, f4):
        f.result(10)
    # Batch 1: aaaa + bb = 10 tokens (c would make 13), but padded together 2 x 6 = 12 > 10: two calls.
    # Batch 2: c. Batch 3: the big request, one text per call (2 x 6 > 10).
    assert p.calls == [(["aaaa"], 1), (["bb"], 1), (["c"], 1), (["cccc"], 1), (["dddd"], 1), (["eeee"], 1)]
    assert batcher.close(10)


def test_calls_group_texts_of_similar_length() -> None:
    lengths = [10, 50, 12, 48, 30, 11, 49]
    assert plan_forwards(lengths, max_texts=64, max_tokens=8192, pad_slack=4) == [[1, 6, 3], [4], [2, 5, 0]]
    assert plan_forwards(lengths, max_texts=2, max_tokens=8192, pad_slack=4) == [[1, 6], [3], [4], [2, 5], [0]]
    assert plan_forwards(lengths, max_texts=64, max_tokens=100, pad_slack=100) == [[1, 6], [3, 4], [2, 5, 0]]
    assert plan_forwards(lengths, max_texts=64, max_tokens=8192, pad_slack=100) == [[1, 6, 3, 4, 2, 5, 0]]


def test_a_lone_client_never_waits_for_the_window() -> None:
    batcher = Batcher(window_ms=1000)
    p = Recorder("v0001-20260101")
    start = time.monotonic()
    for i in range(3):  # one request after the other: nobody to wait for
        assert batcher.submit(p, [f"t{i}"]).result(10) == [f"v0001-20260101:t{i}"]
    assert time.monotonic() - start < 0.5
    assert batcher.close(10)


def test_the_window_waits_for_requests_already_admitted() -> None:
    batcher = Batcher(window_ms=1000)
    p = Recorder("v0001-20260101")
    batcher.gate.acquire(1)  # a second request is admitted and still resolving its model
    start = time.monotonic()
    first = batcher.submit(p, ["a"])
    time.sleep(0.1)
    assert not first.done()  # the worker waits for it
    batcher.gate.release(1)  # ... which now arrives
    second = batcher.submit(p, ["b"])
    assert first.result(10) == ["v0001-20260101:a"] and second.result(10) == ["v0001-20260101:b"]
    assert p.calls == [(["a", "b"], 2)]  # one model call for both
    assert time.monotonic() - start < 0.9  # and no waiting once everyone admitted had arrived
    assert batcher.close(10)


def test_a_failing_model_call_fails_its_requests_only() -> None:
    batcher, blocker = _held_batcher()
    bad, good = Recorder("v0001-20260101", fail=True), Recorder("v0002-20260101")
    f_bad, f_good = batcher.submit(bad, ["x"]), batcher.submit(good, ["y"])
    blocker.release.set()
    with pytest.raises(RuntimeError, match="model exploded"):
        f_bad.result(10)
    assert f_good.result(10) == ["v0002-20260101:y"]
    assert batcher.gate.depth == 0
    assert batcher.close(10)


def test_an_abandoned_request_is_skipped_and_released() -> None:
    batcher, blocker = _held_batcher()
    p = Recorder("v0001-20260101")
    gone, kept = batcher.submit(p, ["gone"]), batcher.submit(p, ["kept"])
    assert gone.cancel()  # the client went away while it waited
    blocker.release.set()
    assert kept.result(10) == ["v0001-20260101:kept"]
    assert p.calls == [(["kept"], 1)]
    assert batcher.gate.depth == 0
    assert batcher.close(10)


def test_close_answers_everything_queued_then_refuses() -> None:
    batcher, blocker = _held_batcher()
    p = Recorder("v0001-20260101")
    queued = [batcher.submit(p, [f"t{i}"]) for i in range(5)]
    closer = threading.Thread(target=batcher.close, args=(10,))
    closer.start()
    blocker.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(0) for f in queued] == [[f"v0001-20260101:t{i}"] for i in range(5)]
    with pytest.raises(ApiError) as e:
        batcher.submit(p, ["late"])
    assert e.value.status == 503 and e.value.detail == errors.SHUTTING_DOWN


class Rendezvous(Recorder):
    """A predictor double whose calls return only once `parties` calls are inside at the same time:
    it proves that calls run side by side (with one model thread it would wait forever)."""

    def __init__(self, version: str, parties: int) -> None:
        super().__init__(version)
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads: set[str] = set()

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # raises BrokenBarrierError on timeout: the calls were serialised
        return super().predict(texts, batch_size)


def test_the_calls_of_one_batch_run_side_by_side_on_the_model_threads() -> None:
    inits: list[str] = []
    batcher = Batcher(window_ms=0, pad_slack=0, workers=2,
                      thread_init=lambda: inits.append(threading.current_thread().name))
    p = Rendezvous("v0001-20260101", parties=2)
    # Lengths 3 and 12 tokens with no padding slack: two model calls for one request.
    assert batcher.submit(p, ["a", "bbbbbbbbbb"]).result(10) == ["v0001-20260101:a", "v0001-20260101:bbbbbbbbbb"]
    assert len(p.threads) == 2 and all(t.startswith("sharelens-model") for t in p.threads)
    assert sorted(inits) == sorted(p.threads)  # every model thread ran the initialiser once
    assert batcher.gate.depth == 0
    assert batcher.close(10)


def test_two_model_threads_serve_two_batches_at_once() -> None:
    batcher = Batcher(window_ms=0, workers=2)
    # Two versions never share a batch; one barrier needs both of their calls inside at once.
    a, b = Rendezvous("v0001-20260101", parties=2), Rendezvous("v0002-20260101", parties=2)
    b.barrier = a.barrier
    f1 = batcher.submit(a, ["x"])
    f2 = batcher.submit(b, ["y"])
    assert f1.result(10) == ["v0001-20260101:x"] and f2.result(10) == ["v0002-20260101:y"]
    assert batcher.close(10)


def test_a_failing_call_fails_its_batch_once_and_the_other_calls_finish() -> None:
    batcher = Batcher(window_ms=0, pad_slack=0, workers=2)

    class Half(Recorder):
        def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
            if texts == ["boom"]:
                raise RuntimeError("model exploded")
            return super().predict(texts, batch_size)

    p = Half("v0001-20260101")
    f = batcher.submit(p, ["boom", "a much longer text than boom"])
    with pytest.raises(RuntimeError, match="model exploded"):
        f.result(10)
    assert batcher.submit(p, ["fine"]).result(10) == ["v0001-20260101:fine"]
    assert batcher.gate.depth == 0
    assert batcher.close(10)


def test_the_gate_refuses_beyond_max_queue_but_an_idle_gate_admits_anything() -> None:
    gate = Gate("predict", limit=3, retry_after_s=2)
    gate.acquire(5)  # idle: a batch larger than the limit is slow, never refused forever
    with pytest.raises(ApiError) as e:
        gate.acquire(1)
    assert e.value.status == 429 and e.value.detail == errors.OVERLOADED
    assert e.value.headers == {"Retry-After": "2"}
    gate.release(5)
    gate.acquire(3)
    assert gate.depth == 3


def _probabilities(result: dict) -> np.ndarray:
    return np.array([p["probability"] for p in result["motive"]["probabilities"]]
                    + [t["probability"] for t in result["tier"]["probabilities"]])


def test_concurrent_clients_are_batched_and_get_the_unbatched_answer(serving_models_dir, store,
                                                                     real_posts) -> None:
    # Posts of different lengths, so that batching pads them: the case where results could drift.
    texts = sorted(real_posts[:200], key=len)[::12][:16]
    assert len({len(t) for t in texts}) > 8
    app = create_app(Settings(models_dir=serving_models_dir, batch_window_ms=200), store)
    start = threading.Barrier(len(texts))

    def ask(text: str) -> dict:
        client = TestClient(app)
        start.wait()
        res = client.post("/predict", json={"text": text})
        assert res.status_code == 200, res.text
        return res.json()

    with ThreadPoolExecutor(len(texts)) as pool:
        batched = list(pool.map(ask, texts))
    metrics = TestClient(app).get("/metrics").text
    app.state.batcher.close(10)

    for text, got in zip(texts, batched, strict=True):
        want = service.predict(store, [text], Explainer()).model_dump(mode="json")
        assert got["model"] == want["model"]
        g, w = got["results"][0], want["results"][0]
        # Labels, order, token counts: identical. Probabilities: equal up to float32 rounding
        # (padding changes the shape of the matrix products, not the maths; measured <= 6e-8).
        assert {k: v for k, v in g.items() if k not in ("motive", "tier")} == \
               {k: v for k, v in w.items() if k not in ("motive", "tier")}
        assert [p["motive"] for p in g["motive"]["probabilities"]] == [p["motive"] for p in w["motive"]["probabilities"]]
        assert g["motive"]["top"] == w["motive"]["top"] and g["tier"]["top"] == w["tier"]["top"]
        np.testing.assert_allclose(_probabilities(g), _probabilities(w), rtol=0, atol=1e-6)

    version = batched[0]["model"]["version"]
    count = float(re.search(rf'sharelens_batcher_batch_size_count{{model_version="{version}"}} (\S+)', metrics)[1])
    total = float(re.search(rf'sharelens_batcher_batch_size_sum{{model_version="{version}"}} (\S+)', metrics)[1])
    assert total == len(texts)
    assert count < len(texts)  # some model calls served several clients
    assert 'sharelens_queue_depth_texts{queue="predict"} 0.0' in metrics


def test_requests_for_different_versions_never_share_a_model_call(serving_models_dir, store, versions) -> None:
    app = create_app(Settings(models_dir=serving_models_dir, batch_window_ms=200), store)
    refs = ["production", "canary"] * 4
    start = threading.Barrier(len(refs))

    def ask(ref: str) -> str:
        client = TestClient(app)
        start.wait()
        res = client.post("/predict", json={"text": "转发抽奖，关注并转发", "model": ref})
        assert res.status_code == 200, res.text
        return res.json()["model"]["version"]

    with ThreadPoolExecutor(len(refs)) as pool:
        answered = list(pool.map(ask, refs))
    metrics = TestClient(app).get("/metrics").text
    app.state.batcher.close(10)
    assert answered == [versions[r] for r in refs]
    for v in (versions["production"], versions["canary"]):
        assert f'sharelens_batcher_batch_size_sum{{model_version="{v}"}} 4.0' in metrics
