"""SIGTERM drains: a real `python -m serving.cli serve` process, stopped while explanations run,
answers every request it had accepted and exits with status 0. (That the batcher's queue is
answered on lifespan shutdown is tested in-process, deterministically, in test_serving_overload.)"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # a fresh interpreter imports torch and loads the model: ~10-20 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _depth(metrics: str, queue: str) -> float:
    m = re.search(rf'sharelens_queue_depth_texts{{queue="{queue}"}} (\S+)', metrics)
    return float(m[1]) if m else 0.0


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_models_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARELENS_")}
    env.update(SHARELENS_MODELS_DIR=str(tiny_models_dir), SHARELENS_TORCH_THREADS="1",
               SHARELENS_EXPLAIN_STEPS="256",  # each explanation takes a while
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--port", str(port)], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server died: {(tmp_path / 'server.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not become ready"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

        bodies = [{"text": f"转发抽奖！关注并转发第{i}条，周五抽3位送蓝牙耳机 #抽奖#", "explain": i < 3} for i in range(6)]
        with ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(httpx.post, base + "/predict", json=b, timeout=120) for b in bodies]
            deadline = time.monotonic() + 30
            while True:  # the three explanations are admitted and running (the rest are quick)
                metrics = httpx.get(base + "/metrics", timeout=5).text
                if _depth(metrics, "explain") == 3:
                    break
                assert time.monotonic() < deadline, metrics[-1500:]
                time.sleep(0.02)
            assert not any(f.done() for f in futures[:3]), "explanations finished before SIGTERM: make them slower"
            proc.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=120) for f in futures]
        assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
        assert all(r.json()["results"][0]["explanation"] is not None for r in responses[:3])
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "Traceback" not in text, text[-3000:]
