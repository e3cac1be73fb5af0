"""Explanations are bounded: slots, deadlines, a share per client, and work that stops when the
client leaves (serving.explain_control), unit by unit and through the API."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving import errors
from serving.explain_control import ClientShare, ExplainSlots, StoppedError, StopToken, client_key

RAW = "转发这条微博，抽三位朋友送新款手机！#抽奖# @小明"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_share_allows_a_burst_then_the_rate_and_says_when_to_retry() -> None:
    clock = Clock()
    share = ClientShare(rate=2.0, burst=4, clock=clock)
    share.take("a", 4)  # the burst
    with pytest.raises(errors.ApiError) as exc:
        share.take("a", 3)
    assert exc.value.status == 429 and exc.value.code == "E463"
    assert exc.value.headers == {"Retry-After": "2"}  # 3 texts at 2 a second: 1.5 s, rounded up
    share.take("b", 4)  # another client keeps its own share
    clock.now += 1.5
    share.take("a", 3)
    with pytest.raises(errors.ApiError):
        share.take("a", 1)


def test_a_request_larger_than_the_burst_is_admitted_from_a_full_bucket_and_paid_back() -> None:
    clock = Clock()
    share = ClientShare(rate=1.0, burst=4, clock=clock)
    share.take("a", 10)  # never refused forever
    clock.now += 4
    with pytest.raises(errors.ApiError):  # 4 - 10 + 4 = -2 tokens: still paying back
        share.take("a", 1)
    clock.now += 3
    share.take("a", 1)


def test_the_share_can_be_turned_off_and_forgets_the_least_recent_clients() -> None:
    off = ClientShare(rate=0, burst=1)
    for _ in range(100):
        off.take("a", 16)
    clock = Clock()
    share = ClientShare(rate=1.0, burst=1, max_clients=2, clock=clock)
    share.take("a", 1)
    share.take("b", 1)
    share.take("c", 1)  # "a" is forgotten: it starts again with a full bucket
    share.take("a", 1)
    with pytest.raises(errors.ApiError):
        share.take("c", 1)


def test_client_key_is_the_address_with_a_digest_of_a_checked_key_never_the_key() -> None:
    assert client_key(None, "10.0.0.1") == "addr:10.0.0.1"
    keyed = client_key("s3cret", "10.0.0.1")
    assert "s3cret" not in keyed and keyed.startswith("addr:10.0.0.1|key:")
    assert keyed != client_key("other", "10.0.0.1")
    assert client_key(None, None) == "addr:unknown"


def test_the_stop_token_ends_work_at_the_deadline_or_at_shutdown() -> None:
    token = StopToken(seconds=0.05)
    token.check()
    time.sleep(0.06)
    with pytest.raises(StoppedError) as exc:
        token.check()
    assert exc.value.reason == "deadline"
    stopping = threading.Event()
    token = StopToken(seconds=60, shutdown=stopping)
    token.check()
    stopping.set()
    with pytest.raises(StoppedError) as exc:
        token.check()
    assert exc.value.reason == "shutdown"


def test_slots_bound_the_work_that_runs_at_once() -> None:
    slots = ExplainSlots(2)
    running, peak = [0], [0]
    lock = threading.Lock()

    def work(token: StopToken) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 1

    async def main() -> list[int]:
        return await asyncio.gather(*(slots.run(work, StopToken(10), 1) for _ in range(6)))

    assert asyncio.run(main()) == [1] * 6
    assert peak[0] == 2


def test_a_request_that_cannot_get_a_slot_before_its_deadline_is_a_503_with_retry_after() -> None:
    slots = ExplainSlots(1)
    release = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(slots.run(lambda t: release.wait(5), StopToken(10), 1))
        await asyncio.sleep(0.05)
        with pytest.raises(errors.ApiError) as exc:
            await slots.run(lambda t: None, StopToken(0.1), 3)
        assert exc.value.status == 503 and exc.value.code == "E462"
        assert exc.value.headers == {"Retry-After": "3"}
        release.set()
        await first

    asyncio.run(main())
    assert slots.busy == 0


def test_work_stops_between_posts_when_the_client_disconnects() -> None:
    """The watcher sets the token; the worker's next check ends the work and frees the slot."""
    slots = ExplainSlots(1)
    done: list[int] = []
    gone = [False]

    def work(token: StopToken) -> None:
        for post in range(50):
            token.check()
            time.sleep(0.02)  # one post's explanation
            done.append(post)

    async def disconnected() -> bool:
        return gone[0]

    async def main() -> None:
        task = asyncio.ensure_future(slots.run(work, StopToken(30), 1, disconnected=disconnected, poll_s=0.01))
        await asyncio.sleep(0.1)
        gone[0] = True
        with pytest.raises(StoppedError) as exc:
            await task
        assert exc.value.reason == "disconnect"

    asyncio.run(main())
    assert 2 <= len(done) < 20 and slots.busy == 0


def test_work_past_its_deadline_stops_and_answers_503() -> None:
    slots = ExplainSlots(1)
    done: list[int] = []

    def work(token: StopToken) -> None:
        for post in range(100):
            token.check()
            time.sleep(0.02)
            done.append(post)

    async def main() -> None:
        with pytest.raises(errors.ApiError) as exc:
            await slots.run(work, StopToken(0.1), 1)
        assert exc.value.code == "E462"

    asyncio.run(main())
    assert len(done) < 20


# -- through the API ---------------------------------------------------------------------------
def test_explain_method_is_chosen_per_request_and_reported(client) -> None:
    for method in ("occlusion", "integrated_gradients", "gradient_x_input"):
        r = client.post("/predict", json={"text": RAW, "explain": True, "explain_method": method})
        assert r.status_code == 200, r.text
        ex = r.json()["results"][0]["explanation"]
        assert ex["method"] == method and ex["score_meaning"]
        assert ex["motive"]["words"]
    default = client.post("/predict", json={"text": RAW, "explain": True}).json()["results"][0]["explanation"]
    assert default["method"] == client.app.state.settings.explain_method


def test_an_unknown_explain_method_is_a_precise_422(client) -> None:
    r = client.post("/predict", json={"text": RAW, "explain": True, "explain_method": "lime"})
    assert r.status_code == 422
    assert r.json() == {"detail": "unknown explain_method: lime; one of occlusion, integrated_gradients, "
                                  "gradient_x_input", "code": "E461"}


def _app_with(settings_kwargs: dict, serving_models_dir, store):
    from serving.main import create_app
    from serving.routes import get_store
    from serving.settings import Settings

    app = create_app(Settings(models_dir=serving_models_dir, **settings_kwargs))
    app.dependency_overrides[get_store] = lambda: store
    return app


def test_one_client_over_its_share_gets_429_and_the_others_do_not(serving_models_dir, store) -> None:
    from fastapi.testclient import TestClient

    app = _app_with({"explain_client_rate": 0.01, "explain_client_burst": 2}, serving_models_dir, store)
    try:
        a = TestClient(app, client=("10.0.0.1", 5000))
        b = TestClient(app, client=("10.0.0.2", 5000))
        assert a.post("/predict", json={"texts": [RAW, RAW], "explain": True}).status_code == 200
        r = a.post("/predict", json={"text": RAW, "explain": True})
        assert r.status_code == 429 and r.json()["code"] == "E463" and int(r.headers["Retry-After"]) >= 1
        assert a.post("/predict", json={"text": RAW}).status_code == 200  # plain predictions are not shared
        assert b.post("/predict", json={"text": RAW, "explain": True}).status_code == 200
    finally:
        app.state.batcher.close(10)


def test_an_explanation_past_its_deadline_is_a_503_and_counted(serving_models_dir, store) -> None:
    from fastapi.testclient import TestClient

    app = _app_with({"explain_deadline_s": 1e-6}, serving_models_dir, store)
    try:
        c = TestClient(app)
        r = c.post("/predict", json={"texts": [RAW] * 4, "explain": True})
        assert r.status_code == 503 and r.json()["code"] == "E462" and r.headers["Retry-After"] == "1"
        assert 'sharelens_explanations_stopped_total{reason="deadline"} 1.0' in c.get("/metrics").text
        assert app.state.explain_gate.depth == 0 and app.state.explain_slots.busy == 0
    finally:
        app.state.batcher.close(10)


def test_one_explaining_request_per_core(settings) -> None:
    from serving.settings import Settings

    assert Settings(explain_threads=1).resolved_explain_slots() == Settings().cores_per_process()
    assert Settings(explain_threads=64).resolved_explain_slots() == 1


def test_an_explanation_stops_when_its_client_hangs_up(serving_models_dir, store, monkeypatch,
                                                      uvicorn_in_a_thread) -> None:
    """Through a real uvicorn: a client asks to explain 16 posts and closes its connection; the
    server notices, stops before the next post, frees the slot and counts it."""
    import socket

    from serving.explain import Explainer
    from serving.main import create_app
    from serving.settings import Settings

    explained: list[int] = []
    original = Explainer.explain

    def slowly(self, *args, **kwargs):
        time.sleep(0.2)  # one post of a real model's explanation
        explained.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain", slowly)
    app = create_app(Settings(models_dir=serving_models_dir, explain_client_rate=0, registry_poll_s=0), store)
    with uvicorn_in_a_thread(app, lifespan="on") as port:
        body = ('{"texts": [' + ", ".join(['"转发抽奖，关注我们"'] * 16) + '], "explain": true}').encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.7)  # a few posts in
        deadline = time.monotonic() + 10
        while app.state.explain_slots.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.explain_slots.busy == 0 and app.state.explain_gate.depth == 0
        assert 1 <= len(explained) < 16
        metrics = app.state.metrics.render()[0].decode()
        assert 'sharelens_explanations_stopped_total{reason="disconnect"} 1.0' in metrics
