"""Several workers agree: /metrics aggregates every worker (Prometheus multiprocess mode), and every
worker follows the registry (serving.watch), so a promotion reaches all of them.

The watch and the multiprocess rendering are tested in-process first (two "workers" are two
metric sets written under two pids); the last test (in the default run, ~20 s) starts a real `serve`
with two workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from serving import metrics as metrics_module
from serving import watch
from serving.cli import HTTP_PROTOCOL
from serving.main import create_app
from serving.metrics import Metrics, forget_dead_processes, multiprocess_active, multiprocess_dir
from serving.settings import Settings
from serving.store import ModelStore
from sharelens.registry import Registry

REPO = Path(__file__).resolve().parents[2]
KEY = {"X-API-Key": "s3cret"}
DEAD_PID = 4_194_399  # above Linux's largest pid (2**22): never a running process


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


class _Hooks:
    """What the store reports: loads and reload results."""

    def __init__(self, store: ModelStore) -> None:
        self.loads: list[str] = []
        self.reloads: list[tuple[str, bool]] = []
        store.on_load = lambda version, seconds: self.loads.append(version)
        store.on_reload = lambda version, ok: self.reloads.append((version, ok))


# -- the registry watch ----------------------------------------------------------------------------
def test_watch_swaps_in_the_version_the_default_alias_moved_to(private_models_dir, versions) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    hooks = _Hooks(store)
    watcher = watch.RegistryWatcher(store, 0.1)
    assert watcher.check() is None  # the first poll compares: nothing moved
    assert watcher.check() is None and hooks.loads == []
    Registry(private_models_dir).set_alias("sharelens", "production", versions["canary"])  # as `make promote`
    swap = watcher.check()
    assert swap is not None and (swap.version, swap.previous) == (versions["canary"], versions["production"])
    assert store.current[1] == versions["canary"] and hooks.reloads == [(versions["canary"], True)]
    # Another alias moves, a version is registered: the file changed, the default did not: no load.
    Registry(private_models_dir).set_alias("sharelens", "staging", versions["production"])
    assert watcher.check() is None and hooks.loads == [versions["canary"]]


def test_watch_keeps_the_old_model_when_the_registry_is_damaged(private_models_dir, versions) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    hooks = _Hooks(store)
    watcher = watch.RegistryWatcher(store, 0.1)
    assert watcher.check() is None
    registry = private_models_dir / "registry.json"
    good = registry.read_text(encoding="utf-8")
    registry.write_text(good[: len(good) // 2], encoding="utf-8")  # a hand edit cut short
    assert watcher.check() is None
    assert store.current[1] == versions["production"] and store.get().predict(["转发抽奖"])
    assert hooks.reloads == [("default", False)]  # logged and counted once ...
    assert watcher.check() is None and hooks.reloads == [("default", False)]  # ... not at every poll
    registry.unlink()  # gone altogether: refused too
    assert watcher.check() is None and store.current[1] == versions["production"]
    registry.write_text(good, encoding="utf-8")
    Registry(private_models_dir).set_alias("sharelens", "production", versions["canary"])  # repaired and moved
    swap = watcher.check()
    assert swap is not None and swap.version == versions["canary"]


def test_watch_refuses_a_broken_bundle_once_and_keeps_serving(private_models_dir, versions, corrupt_copy) -> None:
    broken = corrupt_copy(private_models_dir, versions["production"])
    store = ModelStore(private_models_dir)
    store.load_default()
    hooks = _Hooks(store)
    watcher = watch.RegistryWatcher(store, 0.1)
    assert watcher.check() is None
    Registry(private_models_dir).set_alias("sharelens", "production", broken)
    assert watcher.check() is None
    assert store.current[1] == versions["production"] and hooks.reloads == [(broken, False)]
    assert watcher.check() is None and hooks.reloads == [(broken, False)]  # not retried until the file changes
    Registry(private_models_dir).set_alias("sharelens", "production", versions["canary"])
    assert watcher.check().version == versions["canary"]


def test_watch_waits_for_the_first_load(private_models_dir) -> None:
    store = ModelStore(private_models_dir)  # not loaded yet: the watch leaves it to the lifespan's load
    watcher = watch.RegistryWatcher(store, 0.1)
    assert watcher.check() is None and store.current == (None, None)


def test_the_watch_task_survives_a_failing_poll_and_stops_when_cancelled(private_models_dir, caplog) -> None:
    store = ModelStore(private_models_dir)
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        raise RuntimeError("disk on fire")

    async def scenario() -> None:
        watcher = watch.RegistryWatcher(store, 0.01)
        watcher.check = check  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(watcher.run())
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        assert not task.done()
        await watch.stop(task)
        assert task.cancelled()

    asyncio.run(scenario())
    assert sum("disk on fire" in r.getMessage() for r in caplog.records) == 1  # logged once, not per poll
    assert watch.start(store, 0) is None  # 0: the watch is off


def test_a_served_app_follows_an_alias_move(private_models_dir, versions) -> None:
    """The lifespan runs the watch: an alias moved in the registry reaches the app, no request needed."""
    app = create_app(Settings(models_dir=private_models_dir, registry_poll_s=0.05))
    with TestClient(app) as client:
        assert app.state.store.wait_ready(60)
        Registry(private_models_dir).set_alias("sharelens", "production", versions["canary"])
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["model"]["version"] != versions["canary"]:
            assert time.monotonic() < deadline, "the alias move did not reach the app"
            time.sleep(0.05)
        served = _samples(client.get("/metrics").text, "sharelens_model_serving")
        assert sorted((labels["model_version"], value) for labels, value in served) == [
            (versions["production"], 0.0), (versions["canary"], 1.0)]


# -- multiprocess metrics, in one process ----------------------------------------------------------
def test_multiprocess_metrics_add_up_the_workers(tmp_path, monkeypatch) -> None:
    """Two workers' metrics written to one directory under two pids (prometheus_client's own way
    of testing this); either one's /metrics shows the sum."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = {pid: values.MultiProcessValue(lambda pid=pid: pid) for pid in (os.getpid(), DEAD_PID)}

    def as_worker(pid: int) -> None:  # series are created on first use, with the ValueClass of that moment
        monkeypatch.setattr(values, "ValueClass", value_class[pid])

    as_worker(os.getpid())
    assert multiprocess_active() == str(tmp_path)
    live, exited = Metrics(multiprocess_active()), Metrics(multiprocess_active())
    for pid, m, n in ((os.getpid(), live, 3), (DEAD_PID, exited, 2)):
        as_worker(pid)
        for _ in range(n):
            m.requests.labels(route="/predict", method="POST", status="200").inc()
            m.process_requests.labels(route="/predict").inc()
        m.observe_depth("predict", n)
        m.observe_load("v0001-20260101", n / 10)
        m.observe_batch("v0001-20260101", n, 10 * n, 1, 0.01)
        m.observe_serving("v0001-20260101")
    as_worker(os.getpid())
    live.observe_serving("v0002-20260102")

    # Before the exited worker is noticed: its live series still count.
    assert len(_samples(generate(tmp_path), "sharelens_process_http_requests")) == 2
    body, _ = live.render()  # notices DEAD_PID is not running and drops its live series
    text = body.decode()
    assert _samples(text, "sharelens_http_requests_total") == [
        ({"route": "/predict", "method": "POST", "status": "200"}, 5.0)]  # counters: every worker, exited too
    assert _samples(text, "sharelens_batcher_batch_size_count") == [({"model_version": "v0001-20260101"}, 2.0)]
    assert _samples(text, "sharelens_batcher_batch_size_sum") == [({"model_version": "v0001-20260101"}, 5.0)]
    assert _samples(text, "sharelens_model_load_seconds") == [({"model_version": "v0001-20260101"}, 0.3)]
    assert _samples(text, "sharelens_queue_depth_texts") == [({"queue": "predict"}, 3.0)]  # live workers only
    assert _samples(text, "sharelens_process_http_requests") == [({"route": "/predict", "pid": str(os.getpid())}, 3.0)]
    assert sorted((s[0]["model_version"], s[1]) for s in _samples(text, "sharelens_model_serving")) == [
        ("v0001-20260101", 0.0), ("v0002-20260102", 1.0)]
    assert "_created" not in text and text.count("# TYPE sharelens_http_requests_total counter") == 1
    live.close()  # this worker stops: its live series go too
    assert _samples(generate(tmp_path), "sharelens_queue_depth_texts") == []


def generate(path: Path) -> str:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry).decode()


def test_forget_dead_processes_only_touches_exited_ones(tmp_path) -> None:
    for name in (f"gauge_livesum_{DEAD_PID}.db", f"gauge_liveall_{DEAD_PID}.db", f"gauge_livesum_{os.getpid()}.db",
                 f"counter_{DEAD_PID}.db", f"gauge_max_{DEAD_PID}.db"):
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_processes(tmp_path) == [DEAD_PID]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"gauge_livesum_{os.getpid()}.db", f"counter_{DEAD_PID}.db", f"gauge_max_{DEAD_PID}.db"])


def test_one_worker_keeps_its_metrics_in_memory(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with multiprocess_dir(1) as path:
        assert path is None and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert multiprocess_active() is None and Metrics().multiprocess is None


def test_several_workers_get_a_fresh_directory_removed_at_exit(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(metrics_module.tempfile, "tempdir", str(tmp_path))
    with multiprocess_dir(2) as path:
        assert path is not None and path.parent == tmp_path and list(path.iterdir()) == []
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
        (path / "counter_1.db").write_bytes(b"")
    assert not path.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_an_operators_directory_is_emptied_of_old_runs_and_kept(tmp_path, monkeypatch) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old run")
    (given / "README").write_text("not ours", encoding="utf-8")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with multiprocess_dir(1) as path:  # even with one worker: the operator asked for it
        assert path == given and sorted(p.name for p in given.iterdir()) == ["README"]
    assert given.exists() and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(given)


def test_serve_with_two_workers_hands_them_a_metrics_directory_and_our_limits(monkeypatch) -> None:
    import uvicorn

    from serving import cli

    seen: dict = {}

    def run(app: str, **options) -> None:  # stands in for uvicorn.run: nothing is started
        path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert path.is_dir() and not any(path.iterdir())
        seen.update(options, app=app, path=path)

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(cli, "_exit_quietly_after_drain", lambda: None)
    monkeypatch.setenv("SHARELENS_WORKERS", "2")
    monkeypatch.setenv("SHARELENS_SHUTDOWN_TIMEOUT_S", "7")
    assert cli.main(["serve", "--port", "8123"]) == 0
    path = seen.pop("path")
    assert not path.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    config = uvicorn.Config(seen.pop("app"), **seen)  # built as uvicorn.run builds it
    assert (config.workers, config.port, config.http, config.limit_concurrency, config.timeout_graceful_shutdown,
            config.h11_max_incomplete_event_size) == (2, 8123, HTTP_PROTOCOL, 512, 7, 16 * 1024)


# -- a real server with two workers ----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_worker(text: str, name: str, **match: str) -> dict[str, float]:
    """pid -> value of a per-process series (label pid), for the samples whose labels match."""
    return {labels["pid"]: value for labels, value in _samples(text, name)
            if all(labels.get(k) == v for k, v in match.items())}


# In the default run, so that CI proves it: two fresh interpreters import torch on the same cores,
# 13-37 s measured on 2 shared cores.
@pytest.mark.timeout(240)
def test_two_workers_aggregate_metrics_and_follow_the_registry(private_models_dir, versions, tmp_path) -> None:
    old, new = versions["production"], versions["canary"]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHARELENS_", "PROMETHEUS_"))}
    env.update(SHARELENS_MODELS_DIR=str(private_models_dir), SHARELENS_WORKERS="2", SHARELENS_API_KEY="s3cret",
               SHARELENS_REGISTRY_POLL_S="0.5", SHARELENS_TORCH_THREADS="1", SHARELENS_MODEL_THREADS="1",
               TMPDIR=str(tmp_path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--port", str(port)], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def scrape() -> str:
        res = httpx.get(base + "/metrics", headers=KEY, timeout=10)
        assert res.status_code == 200, res.text
        return res.text

    def serving(text: str) -> dict[str, str]:
        """pid -> the version that worker answers with by default."""
        return {labels["pid"]: labels["model_version"] for labels, value in _samples(text, "sharelens_model_serving")
                if value == 1}

    def wait_for_both(version: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert proc.poll() is None, f"the server died: {(tmp_path / 'server.log').read_text()[-3000:]}"
            try:
                now = serving(scrape())
                if len(now) == 2 and set(now.values()) == {version}:
                    return
            except httpx.TransportError:
                now = {}
            assert time.monotonic() < deadline, f"workers serve {now}, not both {version}"
            time.sleep(0.1)

    def predict(i: int) -> str:
        # A connection each (no keep-alive): the kernel hands them to either worker.
        res = httpx.post(base + "/predict", json={"text": f"转发抽奖！关注并转发第{i}条，周五抽3位送耳机"},
                         headers={**KEY, "Connection": "close"}, timeout=60)
        assert res.status_code == 200, res.text
        return res.json()["model"]["version"]

    def predict_until_both_answered(sent: int) -> tuple[int, list[str]]:
        """Rounds of concurrent requests until each worker has answered some of them."""
        before = _per_worker(scrape(), "sharelens_process_http_requests", route="/predict")
        answers: list[str] = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                answers += pool.map(predict, range(sent + len(answers), sent + len(answers) + 16))
                after = _per_worker(scrape(), "sharelens_process_http_requests", route="/predict")
                if len(after) == 2 and all(after[pid] > before.get(pid, 0) for pid in after):
                    return sent + len(answers), answers
        pytest.fail(f"one worker answered every request: {after}")

    try:
        wait_for_both(old, 120)
        # (a) Both workers answer; any scrape, whichever worker answers it, shows the sum of both.
        sent, answers = predict_until_both_answered(0)
        assert set(answers) == {old}
        for _ in range(6):
            text = scrape()
            assert ({"route": "/predict", "method": "POST", "status": "200"}, float(sent)) in \
                _samples(text, "sharelens_http_requests_total")
            assert sum(_per_worker(text, "sharelens_process_http_requests", route="/predict").values()) == sent
            assert _samples(text, "sharelens_predicted_texts_total") == [({"model_version": old}, float(sent))]

        # (b) The alias moves in the registry (`make promote`): both workers switch, no request needed.
        Registry(private_models_dir).set_alias("sharelens", "production", new)
        wait_for_both(new, 15)
        sent, answers = predict_until_both_answered(sent)
        assert Counter(answers) == Counter({new: len(answers)})

        # ... and through the API: one worker takes /admin/aliases, the other follows within the poll.
        res = httpx.post(base + "/admin/aliases", json={"alias": "production", "version": old}, headers=KEY,
                         timeout=60)
        assert res.status_code == 200 and res.json()["model"]["version"] == old, res.text
        wait_for_both(old, 15)
        sent, answers = predict_until_both_answered(sent)
        assert set(answers) == {old}
        text = scrape()
        assert sum(v for labels, v in _samples(text, "sharelens_model_reloads_total")
                   if labels == {"model_version": new, "result": "success"}) == 2  # a watch reload in each
        assert sum(v for labels, v in _samples(text, "sharelens_model_reloads_total")
                   if labels["result"] == "failure") == 0

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    server_log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in server_log, server_log[-3000:]
    assert not list(tmp_path.glob("sharelens-metrics-*"))  # the metrics directory went with the server
