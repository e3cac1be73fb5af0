"""The findings of the security review (issue 12), one test or more each: strange input never
turns into a 500, the admin guard holds under a root path, probes never wait for a thread, a
damaged registry or calibration file is a clear refusal, explanations stop when the shutdown
budget is spent, and POST bodies must say they are JSON."""

from __future__ import annotations

import inspect
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from serving import errors, service
from serving.errors import ApiError
from serving.explain import Explainer
from serving.main import create_app
from serving.settings import Settings
from serving.shutdown import ShutdownBudget, watch_signals
from serving.store import ModelStore
from sharelens.post import Post
from sharelens.registry import Registry

J = {"content-type": "application/json"}
KEY = {"X-API-Key": "s3cret"}


def _idle_store(models_dir: Path) -> ModelStore:
    """A store that must never load anything: the request is refused before."""
    return ModelStore(models_dir, loader=lambda p: pytest.fail(f"tried to load {p}"))


# -- 1. lone surrogates and huge numbers: 4xx with a code, never a 500 -----------------------------
@pytest.mark.parametrize(("raw", "field"), [
    (b'{"text": "a", "model": "\\ud800"}', "model"),
    (b'{"text": "a", "explain": true, "explain_motive": "\\ud800"}', "explain_motive"),
    (b'{"text": "\\ud800abc"}', "text"),
    (b'{"texts": ["ok", "x\\udfff"]}', "texts[1]"),
    (b'{"posts": [{"text": "ok", "context": {"channel": "\\ud800"}}]}', "posts[0].context.channel"),
    (b'{"text": "a", "\\ud800": 1}', "body"),
])
def test_lone_surrogate_anywhere_in_the_body_is_a_precise_422(tmp_path, raw, field) -> None:
    client = TestClient(create_app(Settings(models_dir=tmp_path), _idle_store(tmp_path)))
    res = client.post("/predict", content=raw, headers=J)
    assert res.status_code == 422, res.text
    assert res.json() == {"detail": errors.INVALID_UNICODE.format(field=field), "code": "E429"}


def test_lone_surrogate_in_an_admin_alias_is_a_precise_422(tmp_path) -> None:
    client = TestClient(create_app(Settings(models_dir=tmp_path, api_key="s3cret"), _idle_store(tmp_path)))
    res = client.post("/admin/aliases", content=b'{"alias": "\\ud800", "version": "v0001-20260101"}',
                      headers={**J, **KEY})
    assert res.status_code == 422, res.text
    assert res.json() == {"detail": errors.INVALID_UNICODE.format(field="alias"), "code": "E429"}


def test_an_integer_of_thousands_of_digits_is_a_precise_400(tmp_path) -> None:
    client = TestClient(create_app(Settings(models_dir=tmp_path), _idle_store(tmp_path)))
    for raw in (b'{"text": ' + b"1" * 5000 + b"}", b'{"text": "a", "context": {"followers": ' + b"9" * 5000 + b"}}"):
        res = client.post("/predict", content=raw, headers=J)
        assert res.status_code == 400, res.text
        assert res.json() == {"detail": errors.NUMBER_TOO_LONG.format(max=4300), "code": "E435"}


def test_an_error_that_echoes_a_surrogate_still_renders(tmp_path) -> None:
    """Belt and braces: were a surrogate to reach an echoing error, the answer is still a 4xx."""
    res = errors.render(errors.unknown_model("\ud800"))
    assert res.status_code == 404
    assert json.loads(res.body) == {"detail": "unknown model version or alias: \\ud800", "code": "E409"}


# -- 2. the admin guard under a root path ------------------------------------------------------------
def test_admin_is_guarded_under_a_root_path(tmp_path) -> None:
    app = create_app(Settings(models_dir=tmp_path), _idle_store(tmp_path))  # no key: admin disabled
    client = TestClient(app, root_path="/api")
    for path in ("/api/admin/reload", "/admin/reload"):
        res = client.post(path)
        assert res.status_code == 403, (path, res.text)
        assert res.json() == {"detail": errors.ADMIN_DISABLED, "code": "E415"}
    assert client.get("/api/healthz").status_code == 200  # public paths stay public under the prefix
    keyed = TestClient(create_app(Settings(models_dir=tmp_path, api_key="s3cret"), _idle_store(tmp_path)),
                       root_path="/api")
    assert keyed.get("/api/models").status_code == 401
    assert keyed.get("/api/readyz").status_code == 503  # public: no key asked, model not loaded


# -- 5. probes and the /predict dependencies need no thread ------------------------------------------
def test_probes_answer_while_the_thread_pool_is_full(serving_models_dir, store) -> None:
    """Explanations and loads can take every thread of the pool: /healthz, /readyz and /metrics
    must still answer, so an orchestrator does not kill a busy but healthy server."""
    app = create_app(Settings(models_dir=serving_models_dir), store)

    async def probe() -> list[int]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        borrowers = [object() for _ in range(int(limiter.total_tokens))]
        for b in borrowers:
            limiter.acquire_on_behalf_of_nowait(b)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                with anyio.fail_after(10):
                    return [(await client.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics")]
        finally:
            for b in borrowers:
                limiter.release_on_behalf_of(b)

    try:
        assert anyio.run(probe) == [200, 200, 200]
    finally:
        app.state.batcher.close(10)


def test_predict_dependencies_need_no_thread() -> None:
    """FastAPI runs a sync dependency in the thread pool: every /predict dependency is async."""
    from serving.routes import router

    route = next(r for r in router.routes if getattr(r, "path", None) == "/predict")
    sync = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        stack.extend(dep.dependencies)
        if dep.call is not None and not inspect.iscoroutinefunction(dep.call):
            sync.append(dep.call.__name__)
    assert sync == []


# -- 6. a damaged registry.json or calibration.json: a clear refusal, never a 500 --------------------
@pytest.mark.parametrize(("content", "code"), [
    (b"[1, 2]", "E229"),
    (b'{"models": {"sharelens": {"versions": "v0001", "aliases": {}}}}', "E229"),
    (b'{"models": {"sharelens": {"versions": [], "aliases": {"production": 7}}}}', "E229"),
    (b'{"models": \xff}', "E228"),
    (b'{"models": ', "E220"),
])
def test_damaged_registry_is_refused_with_its_code(private_models_dir, content, code) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = TestClient(create_app(Settings(models_dir=private_models_dir, api_key="s3cret"), store))
    (private_models_dir / "registry.json").write_bytes(content)
    res = client.post("/admin/reload", headers=KEY)
    assert res.status_code == 409, res.text
    reason = errors.CATALOG_BY_CODE[code].detail
    assert res.json() == {"code": "E417", "detail": errors.RELOAD_REFUSED.format(
        version="default", code=code, reason=reason)}
    for res in (client.post("/predict", json={"text": "转发", "model": "canary"}, headers=KEY),
                client.get("/models", headers=KEY)):
        assert res.status_code == 503 and res.json() == {"detail": errors.MODEL_UNAVAILABLE, "code": "E420"}
    # Requests that name no model keep the pinned default.
    assert client.post("/predict", json={"text": "转发"}, headers=KEY).status_code == 200


@pytest.mark.parametrize("content", [b"{not json", b'{"motive_temperature": "\xff"}', b"[1.5]",
                                     b'{"motive_temperature": "hot"}', b'{"tier_temperature": 0}',
                                     b'{"motive_temperature": -1.0}', b'{"tier_temperature": 1e999}'])
def test_damaged_calibration_is_refused_with_its_code(private_models_dir, versions, content) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = TestClient(create_app(Settings(models_dir=private_models_dir, api_key="s3cret"), store))
    (private_models_dir / "sharelens" / versions["canary"] / "calibration.json").write_bytes(content)
    res = client.post("/admin/aliases", json={"alias": "production", "version": versions["canary"]}, headers=KEY)
    assert res.status_code == 409, res.text
    assert res.json() == {"code": "E417", "detail": errors.RELOAD_REFUSED.format(
        version=versions["canary"], code="E250", reason=errors.CATALOG_BY_CODE["E250"].detail)}
    res = client.post("/predict", json={"text": "转发", "model": "canary"}, headers=KEY)
    assert res.status_code == 503 and res.json() == {"detail": errors.MODEL_UNAVAILABLE, "code": "E420"}


# -- 8. one shutdown budget; explanations stop when it is spent ---------------------------------------
def test_explanations_stop_between_posts_once_the_budget_is_spent(store, monkeypatch) -> None:
    budget = ShutdownBudget(20)
    done: list[str] = []
    explain = Explainer(steps=2, stop=budget.stopping)
    original = Explainer.explain

    def explain_then_spend(self, predictor, post, pred, motive, **kwargs):
        out = original(self, predictor, post, pred, motive, **kwargs)
        done.append(Post.of(post).text)
        budget.stop()  # the budget runs out while the first post is being explained
        return out

    monkeypatch.setattr(Explainer, "explain", explain_then_spend)
    posts = [Post(t) for t in ("转发抽奖", "暴雨预警", "求扩散")]
    with pytest.raises(ApiError) as e:
        service.predict(store, posts, explain, explain=True)
    assert e.value.code == "E419" and done == ["转发抽奖"]


def test_the_drain_gets_what_the_graceful_shutdown_left(serving_models_dir, store) -> None:
    app = create_app(Settings(models_dir=serving_models_dir, shutdown_timeout_s=20), store)
    given: list[float | None] = []
    close = app.state.batcher.close
    app.state.batcher.close = lambda timeout=None: given.append(timeout) or close(timeout)
    with TestClient(app):
        app.state.shutdown.begin(at=time.monotonic() - 15)  # the signal came 15 s ago
        assert not app.state.shutdown.stopping.is_set()
    assert len(given) == 1 and 0 < given[0] <= 5
    assert app.state.shutdown.stopping.is_set()  # explanations still running stop at their next post


def test_the_signal_starts_the_shutdown_clock() -> None:
    seen: list[int] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # stands in for uvicorn's
    try:
        budget = ShutdownBudget(20)
        watch_signals(budget)
        assert budget.started is None
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # uvicorn's handler still runs
        assert budget.started is not None and 19 < budget.remaining() <= 20
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_watching_signals_off_the_main_thread_is_a_no_op() -> None:
    out: list[BaseException] = []
    t = threading.Thread(target=lambda: _capture(out, lambda: watch_signals(ShutdownBudget(5))))
    t.start()
    t.join(10)
    assert out == []


def _capture(out: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - reported to the test thread
        out.append(exc)


# -- 9. JSON bodies must say so; names match whole ---------------------------------------------------
def test_post_without_a_content_type_is_refused(tmp_path) -> None:
    """A cross-site `no-cors` fetch can send text/plain or nothing: neither may run the model."""
    client = TestClient(create_app(Settings(models_dir=tmp_path), _idle_store(tmp_path)))
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        res = client.post("/predict", content=b'{"text": "a"}', headers=headers)
        assert res.status_code == 415, headers
        assert res.json() == {"detail": errors.UNSUPPORTED_MEDIA_TYPE, "code": "E411"}


def test_a_trailing_newline_never_passes_for_a_name(private_models_dir, versions) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    client = TestClient(create_app(Settings(models_dir=private_models_dir, api_key="s3cret"), store))
    res = client.post("/admin/aliases", json={"alias": "staging\n", "version": versions["canary"]}, headers=KEY)
    assert res.status_code == 422 and res.json()["code"] == "E418", res.text
    res = client.post("/admin/aliases", json={"alias": "staging", "version": versions["canary"] + "\n"}, headers=KEY)
    assert res.status_code == 404 and res.json()["code"] == "E409", res.text
    assert "staging\n" not in Registry(private_models_dir).entry("sharelens")["aliases"]
    store.registry.read = lambda: pytest.fail("the registry was read")  # type: ignore[method-assign]
    for ref in ("production\n", versions["canary"] + "\n", "v٠٠٠١-20260101"):
        with pytest.raises(ApiError) as e:
            store.get(ref)
        assert e.value.code == "E409"


# -- 10. one code per failure, one catalog -------------------------------------------------------------
def test_framework_answers_carry_a_code_too(client) -> None:
    res = client.get("/nope")
    assert res.status_code == 404 and res.json() == {"detail": errors.NOT_FOUND, "code": "E437"}
    res = client.get("/predict")
    assert res.status_code == 405 and res.json() == {"detail": errors.METHOD_NOT_ALLOWED, "code": "E438"}
    res = client.get("/static/nope.js")
    assert res.status_code == 404 and res.json() == {"detail": errors.NOT_FOUND, "code": "E437"}


def test_a_refused_cors_preflight_carries_a_code(serving_models_dir, store) -> None:
    app = create_app(Settings(models_dir=serving_models_dir, cors_origins=["https://editor.example"]), store)
    client = TestClient(app)
    res = client.options("/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert res.status_code == 400
    assert res.json() == {"detail": errors.CORS_REFUSED.format(what="origin"), "code": "E445"}
    assert "access-control-allow-origin" not in res.headers
    ok = client.options("/predict", headers={"Origin": "https://editor.example", "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://editor.example"
    app.state.batcher.close(10)


def test_the_internal_error_carries_a_code(app) -> None:
    from serving.routes import get_store

    class Broken:
        name = "sharelens"

        def get(self, ref=None):
            raise RuntimeError("boom")

    app.dependency_overrides[get_store] = lambda: Broken()
    res = TestClient(app, raise_server_exceptions=False).post("/predict", json={"text": "转发抽奖"})
    assert res.status_code == 500 and res.json() == {"detail": errors.INTERNAL, "code": "E500"}


def test_invalid_utf8_and_lone_surrogate_have_different_codes(client) -> None:
    bad_bytes = client.post("/predict", content=b'{"text": "\xff"}', headers=J).json()
    surrogate = client.post("/predict", content=b'{"text": "\\ud800"}', headers=J).json()
    assert bad_bytes["code"] == "E407" and surrogate["code"] == "E429"


def test_a_damaged_bundle_keeps_its_own_reason(private_models_dir, versions) -> None:
    """An unreadable context.json is refused with its own code (E251), not the registry's E220."""
    store = ModelStore(private_models_dir)
    store.load_default()
    broken = private_models_dir / "sharelens" / "v0999-20260101"
    shutil.copytree(private_models_dir / "sharelens" / versions["production"], broken)
    (broken / "context.json").write_text("{", encoding="utf-8")
    Registry(private_models_dir).register("sharelens", broken.name)
    client = TestClient(create_app(Settings(models_dir=private_models_dir, api_key="s3cret"), store))
    res = client.post("/admin/aliases", json={"alias": "production", "version": broken.name}, headers=KEY)
    assert res.status_code == 409 and "(E251: " in res.json()["detail"], res.text


# -- 7. oversize request heads, and a body that never finishes arriving ------------------------------
def test_an_oversize_request_head_is_a_431(tmp_path) -> None:
    client = TestClient(create_app(Settings(models_dir=tmp_path), _idle_store(tmp_path)))
    assert client.get("/healthz", headers={"x-pad": "a" * 8 * 1024}).status_code == 200
    for res in (client.get("/healthz", headers={"x-pad": "a" * 32 * 1024}),
                client.get("/healthz?" + "q" * 32 * 1024),
                client.post("/predict", json={"text": "a"}, headers={f"x-{i}": "a" * 1000 for i in range(20)})):
        assert res.status_code == 431
        assert res.json() == {"detail": errors.HEADERS_TOO_LARGE.format(max=16384), "code": "E444"}



def test_a_stalled_body_times_out(tmp_path) -> None:
    app = create_app(Settings(models_dir=tmp_path, body_timeout_s=0.2), _idle_store(tmp_path))
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"text": "', "more_body": True}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop()
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def run() -> None:
        with anyio.fail_after(10):
            await app(scope, receive, send)

    try:
        anyio.run(run)
    finally:
        app.state.batcher.close(10)
    assert sent[0]["status"] == 408
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body == {"detail": errors.BODY_TIMEOUT.format(seconds=0.2), "code": "E440"}
