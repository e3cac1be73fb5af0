"""`make bench`: what a user of the API will see, measured on this machine.

- cold start: process start -> /readyz 200 (model loaded and warmed), over HTTP;
- single-text /predict latency (p50/p95) without explanations, sequential, real posts;
- batch throughput (posts/s, batches of 32);
- /predict with explanations (p50);
- resident memory of the server process after all of it;
- side by side, in this process: sharelens' Predictor vs a plain `transformers`
  pipeline("text-classification") over the same encoder weights (a sequence-classification
  model built from the bundle's encoder; its pooler/head differ, the compute is the same);
- explanation faithfulness: AOPC comprehensiveness vs random deletion (serving.faithfulness).

Posts come from the held-out test split (data/build/jsonl/test.jsonl): real length, real text.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load_posts(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()][:n]


def http_bench(posts: list[str], models_dir: Path, model_name: str, single_n: int, explain_n: int) -> dict:
    import httpx
    import psutil

    port = _free_port()
    env = {**os.environ, "SHARELENS_PORT": str(port), "SHARELENS_MODELS_DIR": str(models_dir),
           "SHARELENS_MODEL_NAME": model_name}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            out["cold_start_s"] = time.perf_counter() - t0
            for text in posts[:10]:  # warm the HTTP path
                client.post("/predict", json={"text": text})
            lat = []
            for i in range(single_n):
                t = time.perf_counter()
                r = client.post("/predict", json={"text": posts[i % len(posts)]})
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
            out["single_p50_ms"] = 1000 * statistics.median(lat)
            out["single_p95_ms"] = 1000 * _pct(lat, 0.95)
            t = time.perf_counter()
            done = 0
            for start in range(0, len(posts), 32):
                batch = posts[start : start + 32]
                client.post("/predict", json={"texts": batch}).raise_for_status()
                done += len(batch)
            out["batch_posts_per_s"] = done / (time.perf_counter() - t)
            lat = []
            for i in range(explain_n):
                t = time.perf_counter()
                client.post("/predict", json={"text": posts[i], "explain": True}).raise_for_status()
                lat.append(time.perf_counter() - t)
            out["explain_p50_ms"] = 1000 * statistics.median(lat)
            out["explain_p95_ms"] = 1000 * _pct(lat, 0.95)
            out["server_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def inprocess_bench(posts: list[str], bundle: Path, single_n: int) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    from sharelens.predictor import Predictor

    pred = Predictor.from_bundle(bundle)
    out: dict = {}
    lat = []
    for i in range(single_n):
        t = time.perf_counter()
        pred.predict([posts[i % len(posts)]])
        lat.append(time.perf_counter() - t)
    out["sharelens_single_p50_ms"] = 1000 * statistics.median(lat)
    t = time.perf_counter()
    pred.predict(posts, batch_size=32)
    out["sharelens_batch_posts_per_s"] = len(posts) / (time.perf_counter() - t)

    config = AutoConfig.from_pretrained(bundle, num_labels=10)
    seqcls = AutoModelForSequenceClassification.from_config(config)
    missing = seqcls.base_model.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in pred.model.state_dict().items() if k.startswith("encoder.")},
        strict=False)
    assert not [k for k in missing.missing_keys if not k.startswith("pooler")], missing.missing_keys
    seqcls.eval()
    pipe = pipeline("text-classification", model=seqcls, tokenizer=pred.tokenizer, device=-1, top_k=None,
                    truncation=True, max_length=pred.max_length)
    lat = []
    with torch.inference_mode():
        for i in range(single_n):
            t = time.perf_counter()
            pipe(posts[i % len(posts)])
            lat.append(time.perf_counter() - t)
        out["pipeline_single_p50_ms"] = 1000 * statistics.median(lat)
        t = time.perf_counter()
        pipe(posts, batch_size=32)
        out["pipeline_batch_posts_per_s"] = len(posts) / (time.perf_counter() - t)
    out["single_speedup_vs_pipeline"] = out["pipeline_single_p50_ms"] / out["sharelens_single_p50_ms"]
    out["batch_speedup_vs_pipeline"] = out["sharelens_batch_posts_per_s"] / out["pipeline_batch_posts_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    from sharelens.errors import SharelensError
    from sharelens.registry import Registry

    ap = argparse.ArgumentParser(description="sharelens benchmark")
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("SHARELENS_MODELS_DIR", REPO / "models")))
    ap.add_argument("--name", default=os.environ.get("SHARELENS_MODEL_NAME", "sharelens"))
    ap.add_argument("--model", default=None, help="alias or version (default: production, then latest)")
    ap.add_argument("--posts", type=Path, default=REPO / "data/build/jsonl/test.jsonl")
    ap.add_argument("--n", type=int, default=256, help="posts for throughput")
    ap.add_argument("--single", type=int, default=100, help="sequential single-text requests")
    ap.add_argument("--explain", type=int, default=10, help="requests with explanations")
    ap.add_argument("--aopc", type=int, default=50, help="posts for the faithfulness figure (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    try:
        version, bundle = Registry(a.models_dir).resolve(a.name, a.model)
    except SharelensError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not a.posts.exists():
        print(f"Error E430: no posts at {a.posts}; run `make data`", file=sys.stderr)
        return 2
    posts = load_posts(a.posts, a.n)
    lengths = sorted(len(p) for p in posts)
    res: dict = {"model": f"{a.name} {version}", "posts": len(posts), "median_chars": lengths[len(lengths) // 2],
                 "cpu_threads": os.cpu_count()}
    res.update(http_bench(posts, a.models_dir, a.name, a.single, a.explain))
    res.update(inprocess_bench(posts, bundle, a.single))
    if a.aopc:
        from dataclasses import asdict

        from serving.faithfulness import aopc
        from sharelens.predictor import Predictor

        res["aopc"] = asdict(aopc(Predictor.from_bundle(bundle), posts[: a.aopc]))
    print(render(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def render(r: dict) -> str:
    rows = [
        ("model", r["model"]),
        ("posts (median chars)", f"{r['posts']} ({r['median_chars']})"),
        ("cold start to /readyz", f"{r['cold_start_s']:.2f} s"),
        ("/predict single p50 / p95", f"{r['single_p50_ms']:.1f} / {r['single_p95_ms']:.1f} ms"),
        ("/predict batch throughput", f"{r['batch_posts_per_s']:.1f} posts/s"),
        ("/predict explain p50 / p95", f"{r['explain_p50_ms']:.0f} / {r['explain_p95_ms']:.0f} ms"),
        ("server resident memory", f"{r['server_rss_mb']:.0f} MB"),
        ("in-process single p50: sharelens / pipeline", f"{r['sharelens_single_p50_ms']:.1f} / "
         f"{r['pipeline_single_p50_ms']:.1f} ms (x{r['single_speedup_vs_pipeline']:.2f})"),
        ("in-process batch: sharelens / pipeline", f"{r['sharelens_batch_posts_per_s']:.1f} / "
         f"{r['pipeline_batch_posts_per_s']:.1f} posts/s (x{r['batch_speedup_vs_pipeline']:.2f})"),
    ]
    if "aopc" in r:
        a = r["aopc"]
        ratio = f"x{a['ratio']:.2f}" if a["ratio"] is not None else "n/a"
        rows.append(("AOPC: top-k words / random words", f"{a['attributed']:.3f} / {a['random']:.3f} ({ratio}, "
                     f"{a['n_texts']} posts, k={list(a['k_values'])})"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v} |" for k, v in rows)


if __name__ == "__main__":
    raise SystemExit(main())
