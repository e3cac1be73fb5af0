"""Serving fixtures: a models dir with two registered tiny versions (production = the shared tiny
bundle, `canary` = a second, calibrated one), a loaded store, and an app built on them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's SHARELENS_* variables must not change what the tests see."""
    import os

    for key in list(os.environ):
        if key.startswith("SHARELENS_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tiny model is fastest on one thread, and several threads fighting a concurrent job for
    the same cores (a training run, another test worker) slow it down a hundredfold."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def serving_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path,
                       tiny_encoder_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer

    from sharelens.bundle import save_bundle
    from sharelens.modeling import ShareLensModel
    from sharelens.registry import Registry

    root = tmp_path_factory.mktemp("serving-models")
    shutil.copytree(tiny_models_dir, root, dirs_exist_ok=True)  # never mutate the shared fixture
    reg = Registry(root)
    torch.manual_seed(1)
    model = ShareLensModel.from_encoder(str(tiny_encoder_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    version = reg.next_version("sharelens")
    dest = save_bundle(root / "sharelens" / version, model, tokenizer, {"max_length": 64, "profile": "test"})
    (dest / "calibration.json").write_text(json.dumps(
        {"motive_temperature": 1.5, "tier_temperature": 1.2, "fitted_on": "validation"}), encoding="utf-8")
    reg.register("sharelens", version)
    reg.set_alias("sharelens", "canary", version)
    return root


@pytest.fixture(scope="session")
def versions(serving_models_dir: Path) -> dict[str, str]:
    """alias -> version: production (uncalibrated), canary (calibrated)."""
    from sharelens.registry import Registry

    return dict(Registry(serving_models_dir).entry("sharelens")["aliases"])


@pytest.fixture(scope="session")
def store(serving_models_dir: Path):
    from serving.store import ModelStore

    s = ModelStore(serving_models_dir, "sharelens")
    s.load_default()
    return s


@pytest.fixture
def settings(serving_models_dir: Path):
    from serving.settings import Settings

    return Settings(models_dir=serving_models_dir)


@pytest.fixture
def app(settings, store):
    from serving.main import create_app
    from serving.routes import get_store

    application = create_app(settings)
    application.dependency_overrides[get_store] = lambda: store  # the session's loaded store
    yield application
    application.state.batcher.close(10)  # no lifespan ran: stop the worker thread here


@pytest.fixture
def private_models_dir(tmp_path: Path, serving_models_dir: Path) -> Path:
    """A copy of the serving models dir that a test may change (move aliases, add versions)."""
    root = tmp_path / "models"
    shutil.copytree(serving_models_dir, root)
    return root


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    # No `with`: the lifespan (which loads the default model) is not needed, the store is loaded.
    yield TestClient(app)


@pytest.fixture
def corrupt_copy():
    """(models_dir, version) -> a registered copy of the version whose weights no longer match
    their checksum."""
    from sharelens.registry import Registry

    def make(models_dir: Path, of: str) -> str:
        reg = Registry(models_dir)
        version = reg.next_version("sharelens")
        dest = models_dir / "sharelens" / version
        shutil.copytree(models_dir / "sharelens" / of, dest)
        weights = dest / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-64:] = bytes(64)  # the tail of the last tensor: still loadable, but not what was trained
        weights.write_bytes(bytes(data))
        reg.register("sharelens", version)
        return version

    return make


@pytest.fixture
def uvicorn_in_a_thread():
    """(app, **uvicorn options) -> a context manager running a real uvicorn around `app` in a
    thread on a free 127.0.0.1 port, yielding the port; `serve`'s options unless overridden."""
    import contextlib
    import socket
    import threading
    import time

    import uvicorn

    from serving.cli import uvicorn_options
    from serving.settings import Settings

    @contextlib.contextmanager
    def run(app, **overrides):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        options = {**uvicorn_options(Settings()), "port": port, "factory": False, "workers": 1, "lifespan": "off",
                   "log_level": "critical", **overrides}
        server = uvicorn.Server(uvicorn.Config(app, **options))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive()
                time.sleep(0.02)
            yield port
        finally:
            server.should_exit = True
            thread.join(20)

    return run
