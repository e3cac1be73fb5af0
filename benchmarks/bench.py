"""`make bench`: what a user of the API will see, measured on this machine, for the unoptimised
fp32 eager path and the optimised paths side by side in the same run.

Configurations (`--configs`, default `fp32:transformers,fp32,int8`): a backend (fp32, int8) and a
runtime (`transformers`: the network and tokenizer as trained, the unoptimised baseline; `lean`,
the default: the same function in plain torch, sharelens.lean_bert). The first is the baseline
the ratios and targets are computed against; the target column checks the last.
For each configuration a fresh server process (SHARELENS_BACKEND, SHARELENS_RUNTIME) is measured:
- cold start: process start -> /readyz 200 (model loaded and warmed), over HTTP;
- single-text /predict latency (p50/p95) without explanations, sequential, real posts;
- batch throughput (posts/s, batches of 32);
- /predict with explanations (p50);
- resident memory of the server process after all of it;
- which backend and runtime the server really ran (its /readyz says, and its probabilities are
  compared with the in-process predictors of both backends).
In this process: single-text p50 and batch throughput of sharelens' Predictor per backend, and a
plain `transformers` pipeline("text-classification") over the same encoder weights (a
sequence-classification model built from the bundle's encoder; its pooler/head differ, the
compute is the same); the explanation-method table: for each method (sharelens.explain.METHODS)
on the last configuration, latency per post and AOPC comprehensiveness and sufficiency against
random words (benchmarks.faithfulness; occlusion re-scores with the served network, the gradient
methods differentiate the fp32 one). The server's /predict explain row uses its default method.
A peer (`onnx_bench`; `--no-onnx` skips it, a missing onnxruntime prints it as unavailable):
ONNX Runtime fp32 and int8 (quantize_dynamic) on the same bundle (sharelens.onnx_runtime), the
same posts and batch size, beside the served int8 lean path, with motive and tier macro-F1 of
each on the labelled posts of --posts and a verdict: is the served path at least as fast as ORT
int8 at equal accuracy (within 0.5 macro-F1 points on both heads)?

Posts come from the held-out test split (data/build/jsonl/test.jsonl): real length, real text.
Targets (for the last configuration): batch throughput >= 2x the baseline, single p50 <= 20 ms,
server memory <= 1.2 GB, cold start <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.server import (
    free_port,
    peak_rss_mb,
    running_server,
    server_env,
)
from sharelens.paths import BENCH_POSTS, models_dir


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load_posts(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()][:n]


BACKENDS = ("fp32", "int8")
RUNTIMES = ("lean", "transformers", "onnxruntime")
DEFAULT_CONFIGS = "fp32:transformers,fp32,int8:onnxruntime,int8"
TARGETS = {"batch_speedup": 2.0, "single_p50_ms": 20.0, "server_rss_bytes": 1.2e9, "cold_start_s": 5.0}


def parse_configs(text: str) -> list[tuple[str, str]]:
    """"fp32:transformers,fp32,int8" -> [("fp32", "transformers"), ("fp32", "lean"), ("int8", "lean")]."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        backend, _, runtime = part.partition(":")
        runtime = runtime or "lean"
        if backend not in BACKENDS or runtime not in RUNTIMES:
            raise ValueError(part)
        out.append((backend, runtime))
    if not out or len(set(out)) != len(out):
        raise ValueError(text)
    return out




def label(backend: str, runtime: str) -> str:
    return f"{backend} {runtime}"










def _motive_probs(response: dict) -> dict[str, float]:
    return {p["motive"]: p["probability"] for p in response["results"][0]["motive"]["probabilities"]}


def reference_key(backend: str, runtime: str) -> str:
    """Which in-process outputs a server of this configuration must match: lean and transformers
    compute the same numbers per backend; ONNX Runtime's int8 quantises differently."""
    return f"{backend} onnxruntime" if runtime == "onnxruntime" else backend


def which_backend(served: dict[str, float], references: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The backend whose in-process probabilities the server's are closest to, and the gap."""
    gaps = {b: max(abs(served[m] - ref[m]) for m in ref) for b, ref in references.items()}
    best = min(gaps, key=gaps.__getitem__)
    return best, gaps[best]


def http_bench(posts: list[str], models_dir: Path, model_name: str, single_n: int, explain_n: int,
               backend: str = "fp32", threads: int | None = None,
               references: dict[str, dict[str, float]] | None = None, runtime: str = "lean") -> dict:
    import httpx
    import psutil

    out: dict = {}
    env = server_env(free_port(), models_dir, model_name, backend, threads, runtime)
    with running_server(env) as server:
        proc, base = server.proc, server.base
        out["cold_start_s"] = time.perf_counter() - server.started
        with httpx.Client(base_url=base, timeout=120) as client:
            out["server_rss_ready_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
            ready = client.get("/readyz").json()
            out["reported"] = f"{ready.get('backend')} {ready.get('runtime')}"
            for text in posts[:10]:  # warm the HTTP path
                client.post("/predict", json={"text": text}).raise_for_status()
            if references:
                served = _motive_probs(client.post("/predict", json={"text": posts[0]}).json())
                out["served_backend"], out["served_gap"] = which_backend(served, references)
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
            if lat:
                out["explain_p50_ms"] = 1000 * statistics.median(lat)
                out["explain_p95_ms"] = 1000 * _pct(lat, 0.95)
            out["server_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
            out["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
    return out


def predictor_bench(pred, posts: list[str], single_n: int) -> dict:
    """Single-text p50 and batch throughput of one loaded Predictor, in this process."""
    pred.predict(posts[:8])  # first call pays kernel set-up
    lat = []
    for i in range(single_n):
        t = time.perf_counter()
        pred.predict([posts[i % len(posts)]])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    pred.predict(posts, batch_size=32)
    return {"single_p50_ms": 1000 * statistics.median(lat), "batch_posts_per_s": len(posts) / (time.perf_counter() - t)}


def pipeline_bench(pred, posts: list[str], single_n: int) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    bundle = pred.info.path
    config = AutoConfig.from_pretrained(bundle, num_labels=10)
    seqcls = AutoModelForSequenceClassification.from_config(config)
    missing = seqcls.base_model.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in pred.model.state_dict().items() if k.startswith("encoder.")},
        strict=False)
    assert not [k for k in missing.missing_keys if not k.startswith("pooler")], missing.missing_keys
    seqcls.eval()
    from transformers import AutoTokenizer

    pipe = pipeline("text-classification", model=seqcls, tokenizer=AutoTokenizer.from_pretrained(bundle),
                    device=-1, top_k=None,
                    truncation=True, max_length=pred.max_length)
    lat = []
    with torch.inference_mode():
        for i in range(single_n):
            t = time.perf_counter()
            pipe(posts[i % len(posts)])
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        pipe(posts, batch_size=32)
        return {"single_p50_ms": 1000 * statistics.median(lat),
                "batch_posts_per_s": len(posts) / (time.perf_counter() - t)}


def inprocess_bench(posts: list[str], bundle: Path, single_n: int,
                    configs: list[tuple[str, str]] | tuple = (("fp32", "lean"),),
                    pipeline: bool = True) -> tuple[dict, dict]:
    """({config label or "pipeline": figures}, {config label: loaded Predictor}); a configuration
    that cannot be loaded (no int8 export) gets {"error": message} instead of figures. Load times
    here exclude imports the process already paid; cold start over HTTP is the honest figure."""
    from sharelens.errors import SharelensError
    from sharelens.predictor import Predictor

    out: dict = {}
    preds: dict = {}
    for backend, runtime in configs:
        name = label(backend, runtime)
        t = time.perf_counter()
        try:
            pred = Predictor.from_bundle(bundle, backend=backend, runtime=runtime)
        except SharelensError as exc:
            out[name] = {"error": str(exc)}
            continue
        load_s = time.perf_counter() - t
        out[name] = {"load_s": load_s, **predictor_bench(pred, posts, single_n)}
        preds[name] = pred
    if pipeline:
        reference = next((p for (b, _), p in zip(configs, preds.values(), strict=False) if b == "fp32"), None)
        if reference is not None:
            out["pipeline"] = pipeline_bench(reference, posts, single_n)
    return out, preds


# -- ONNX Runtime as a peer (issue 12) -----------------------------------------------------------
ORT_NAMES = ("onnxruntime fp32", "onnxruntime int8")
SERVED_INT8 = "int8 lean"
EQUAL_POINTS = 0.5  # "equal accuracy": within this many macro-F1 points on both heads


def heads_macro_f1(pred, rows: list[dict]) -> dict:
    """Motive and tier macro-F1 on the labelled rows as `make eval` computes its "model" rows
    (full context, calibrated probabilities, training.metrics), and the top motives for agreement."""
    import numpy as np

    from sharelens.labels import MOTIVE2ID, TIERS
    from sharelens.text import normalise_text
    from training.evaluate import posts_of
    from training.metrics import motive_metrics, tier_metrics

    posts = posts_of(rows)
    raw, _ = pred.logits([normalise_text(p.text) for p in posts], context_ids=pred.context_ids(posts))
    mp, tp = pred.probabilities(raw)
    m_idx = [i for i, r in enumerate(rows) if r.get("motive")]
    t_idx = [i for i, r in enumerate(rows) if r.get("tier")]
    out: dict = {"motive_posts": len(m_idx), "tier_posts": len(t_idx), "top_motive": mp.argmax(1).tolist()}
    if m_idx:
        out["motive_macro_f1"] = motive_metrics(np.array([MOTIVE2ID[rows[i]["motive"]] for i in m_idx]),
                                                mp[m_idx])["macro_f1"]
    if t_idx:
        out["tier_macro_f1"] = tier_metrics(np.array([TIERS.index(rows[i]["tier"]) for i in t_idx]),
                                            tp[t_idx])["macro_f1"]
    return out


def onnx_bench(posts: list[str], bundle: Path, single_n: int, preds: dict, labelled: Path,
               rounds: int = 2) -> dict:
    """ONNX Runtime fp32 and int8 on the same bundle and posts (sharelens.onnx_runtime), timed by
    predictor_bench like the torch paths; the served int8 lean path re-timed beside ORT int8
    (alternating, best of `rounds` each, so both see the same machine load); motive and tier
    macro-F1 of each on the labelled posts of `labelled`. {"error": one line} when onnxruntime is
    missing or the bundle cannot be exported."""
    from sharelens.errors import SharelensError
    from sharelens.onnx_runtime import OnnxPredictor, unavailable
    from sharelens.predictor import Predictor

    why = unavailable()
    if why is not None:
        return {"error": why}
    out: dict = {}
    t = time.perf_counter()
    try:
        ort = {name: OnnxPredictor.from_bundle(bundle, precision=name.split()[1]) for name in ORT_NAMES}
    except Exception as exc:  # noqa: BLE001 - a peer that cannot be exported must not end the bench
        return {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"}
    out["load_s"] = time.perf_counter() - t  # includes the export when the cache was stale
    out["threads"], out["rounds"] = ort[ORT_NAMES[1]].threads, rounds
    out["export"] = {"folder": str(ort[ORT_NAMES[1]].folder),
                     **{k: ort[ORT_NAMES[1]].manifest.get(k) for k in ("export_s", "quantize_s", "quantization")}}
    served = preds.get(SERVED_INT8)
    if served is None:
        try:
            served = Predictor.from_bundle(bundle, backend="int8")
        except SharelensError as exc:
            out["served_error"] = str(exc)
    out[ORT_NAMES[0]] = predictor_bench(ort[ORT_NAMES[0]], posts, single_n)
    pair = {ORT_NAMES[1]: ort[ORT_NAMES[1]], **({SERVED_INT8: served} if served is not None else {})}
    for _ in range(rounds):
        for name, pred in pair.items():
            got, best = predictor_bench(pred, posts, single_n), out.get(name)
            out[name] = got if best is None else {
                "single_p50_ms": min(best["single_p50_ms"], got["single_p50_ms"]),
                "batch_posts_per_s": max(best["batch_posts_per_s"], got["batch_posts_per_s"])}
    if labelled.exists():
        from training.evaluate import read_records

        rows = [r for r in read_records(labelled) if r.get("motive") or r.get("tier")]
        scored = {"fp32 lean": preds.get("fp32 lean"), SERVED_INT8: served, **ort}
        acc = {name: heads_macro_f1(pred, rows) for name, pred in scored.items() if pred is not None}
        ref = acc[ORT_NAMES[0]].pop("top_motive")
        for a in acc.values():
            top = a.pop("top_motive", ref)
            a["top_motive_agrees_with_fp32"] = sum(x == y for x, y in zip(top, ref, strict=True)) / max(1, len(ref))
        out["accuracy"] = acc
    return out


def onnx_verdict(o: dict) -> str:
    """"served int8 lean vs ORT int8: ..." from onnx_bench's figures."""
    served, peer = o.get(SERVED_INT8), o.get(ORT_NAMES[1])
    if not served or not peer:
        return f"served int8 lean vs ORT int8: not compared ({o.get('error') or o.get('served_error') or 'no figures'})"

    def speed(x: float) -> str:
        return f"x{x:.2f} faster" if x >= 1 else f"x{1 / x:.2f} slower"

    single = peer["single_p50_ms"] / served["single_p50_ms"]
    batch = served["batch_posts_per_s"] / peer["batch_posts_per_s"]
    text = f"served int8 lean vs ORT int8: single p50 {speed(single)}, batch throughput {speed(batch)}"
    acc = o.get("accuracy") or {}
    if SERVED_INT8 not in acc or ORT_NAMES[1] not in acc:
        return text + " (accuracy not measured)"
    gaps = {h: 100 * (acc[ORT_NAMES[1]][f"{h}_macro_f1"] - acc[SERVED_INT8][f"{h}_macro_f1"])
            for h in ("motive", "tier") if f"{h}_macro_f1" in acc[SERVED_INT8]}
    said = ", ".join(f"{h} {g:+.2f}" for h, g in gaps.items())
    if not gaps:
        return text + " (no labelled posts: accuracy not measured)"
    if all(abs(g) <= EQUAL_POINTS for g in gaps.values()):
        met = single >= 1 and batch >= 1
        return (text + f" at equal accuracy (ORT int8 - served, macro-F1 points: {said}); "
                f"served at least as fast: {'yes' if met else 'NO'}")
    return (text + f"; accuracy NOT equal (ORT int8 - served, macro-F1 points: {said}; the rule is "
            f"within {EQUAL_POINTS}), so the speeds are not at equal accuracy")


def onnx_rows(o: dict | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, value) rows of the ONNX Runtime peer for `render`, and its verdict line."""
    if not o:
        return [], []
    if "skipped" in o or "error" in o:
        why = f"skipped ({o['skipped']})" if "skipped" in o else f"unavailable: {o['error']}"
        return [(f"in-process {n}: single p50 / batch", why) for n in ORT_NAMES], []
    rows = []
    for n in (*ORT_NAMES, SERVED_INT8):
        f = o.get(n)
        if f:
            best = f"best of {o.get('rounds')}, alternating"
            note = {ORT_NAMES[0]: f" ({o.get('threads')} threads)", ORT_NAMES[1]: f" ({o.get('threads')} threads, {best})",
                    SERVED_INT8: f" (the served int8 path, {best})"}[n]
            rows.append((f"in-process {n}: single p50 / batch{note}",
                         f"{f['single_p50_ms']:.1f} ms / {f['batch_posts_per_s']:.1f} posts/s"))
    for n, a in (o.get("accuracy") or {}).items():
        rows.append((f"macro-F1 motive / tier, {n} ({a.get('motive_posts')} / {a.get('tier_posts')} labelled posts)",
                     f"{_fmt(a.get('motive_macro_f1'), '.4f')} / {_fmt(a.get('tier_macro_f1'), '.4f')} "
                     f"(top motive = fp32's on {a['top_motive_agrees_with_fp32']:.1%})"))
    return rows, [f"Verdict: {onnx_verdict(o)}"]


# -- explanation methods (issue 12) ------------------------------------------------------------
EXPLAIN_TARGETS = {"p50_ms": 200.0, "p95_ms": 600.0}


def explain_methods_bench(pred, config: str, posts: list[str]) -> dict:
    """Each explanation method on the served configuration, in this process with the server's
    explanation threads (all cores): latency per post (both targets, as the API computes them)
    and AOPC comprehensiveness / sufficiency against random words (benchmarks.faithfulness)."""
    if pred is None:
        return {"error": f"{config} could not be loaded"}
    from benchmarks.faithfulness import compare_methods
    from serving.settings import Settings
    from sharelens.explain import warm_up

    settings = Settings()
    warm_up()
    rows = compare_methods(pred, posts, steps=settings.explain_steps)
    for row in rows:
        row.pop("latency_ms", None)
    return {"config": config, "posts": len(posts), "default": settings.explain_method,
            "ig_steps": settings.explain_steps, "rows": rows}


def render_explain_methods(e: dict | None) -> list[str]:
    """The explanation-method table: one row per method, the served default marked, the targets."""
    if not e:
        return []
    if "error" in e:
        return [f"Explanation methods: unavailable ({e['error']})"]
    rows = e["rows"]
    ig = next((r for r in rows if r["method"] == "integrated_gradients"), None)
    out = [f"Explanation methods on {e['config']} ({e['posts']} posts; integrated_gradients with {e['ig_steps']} "
           "steps): latency per post, AOPC comprehensiveness (higher: better) and sufficiency (lower: better), "
           "each beside deleting / keeping as many random words; target: p50 <= 200 ms, p95 <= 600 ms, "
           "comprehensiveness not below integrated_gradients'",
           "| method | p50 / p95 | comprehensiveness (random) | sufficiency (random) | target met |",
           "|---|---|---|---|---|"]
    for r in rows:
        fast = r["p50_ms"] is not None and r["p50_ms"] <= EXPLAIN_TARGETS["p50_ms"] and r["p95_ms"] <= EXPLAIN_TARGETS["p95_ms"]
        faithful = ig is None or r["attributed"] >= ig["attributed"] - 1e-9
        name = r["method"] + (" (served default)" if r["method"] == e.get("default") else "")
        out.append(f"| {name} | {_fmt(r['p50_ms'], '.0f')} / {_fmt(r['p95_ms'], '.0f')} ms | "
                   f"{r['attributed']:.3f} ({r['random']:.3f}) | {r['sufficiency']:.3f} ({r['sufficiency_random']:.3f}) | "
                   f"{'yes' if fast and faithful else 'NO'}"
                   f"{'' if fast else ' (slow)'}{'' if faithful else ' (less faithful)'} |")
    return out


def main(argv: list[str] | None = None) -> int:
    from sharelens.errors import SharelensError
    from sharelens.registry import Registry

    ap = argparse.ArgumentParser(description="sharelens benchmark: the fp32 eager baseline vs the optimised paths")
    ap.add_argument("--models-dir", type=Path, default=models_dir())
    ap.add_argument("--name", default=os.environ.get("SHARELENS_MODEL_NAME", "sharelens"))
    ap.add_argument("--model", default=None, help="alias or version (default: production, then latest)")
    ap.add_argument("--posts", type=Path, default=BENCH_POSTS)
    ap.add_argument("--n", type=int, default=256, help="posts for throughput")
    ap.add_argument("--single", type=int, default=100, help="sequential single-text requests")
    ap.add_argument("--explain", type=int, default=10, help="requests with explanations")
    ap.add_argument("--aopc", type=int, default=50, help="posts for the explanation-method table: latency and "
                    "faithfulness of each method on the served configuration (0: skip)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="comma-separated backend[:runtime] (backend fp32|int8, runtime lean|transformers; "
                    "default lean); the first is the baseline")
    ap.add_argument("--threads", type=int, default=None,
                    help="model threads of the servers (SHARELENS_MODEL_THREADS; default: one per core)")
    ap.add_argument("--no-http", action="store_true", help="skip the server measurements")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime peer (sharelens.onnx_runtime)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    a = ap.parse_args(argv)
    try:
        configs = parse_configs(a.configs)
    except ValueError as exc:
        print(f"Error E431: --configs takes distinct backend[:runtime] entries (backend {', '.join(BACKENDS)}; "
              f"runtime {', '.join(RUNTIMES)}), not {exc}", file=sys.stderr)
        return 2
    try:
        version, bundle = Registry(a.models_dir).resolve(a.name, a.model)
    except SharelensError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not a.posts.exists():
        print(f"Error E430: no posts at {a.posts}; run `make data`", file=sys.stderr)
        return 2
    import torch

    posts = load_posts(a.posts, a.n)
    lengths = sorted(len(p) for p in posts)
    names = [label(b, r) for b, r in configs]
    res: dict = {"model": f"{a.name} {version}", "posts": len(posts), "median_chars": lengths[len(lengths) // 2],
                 "cpu_threads": os.cpu_count(), "torch_threads": torch.get_num_threads(), "configs": names,
                 "load_avg_start": os.getloadavg()[0]}
    from tqdm import tqdm

    # one step per stage (each takes seconds to minutes); the figures are printed at the end
    stages = len(configs) * (1 if a.no_http else 2) + 1 + (1 if a.aopc else 0)
    bar = tqdm(total=stages, desc="bench", unit="stage", disable=a.no_progress, dynamic_ncols=True)

    def stage(what: str) -> None:
        bar.set_postfix_str(what, refresh=True)

    with bar:
        stage("in-process " + ", ".join(names))
        res["inprocess"], preds = inprocess_bench(posts, bundle, a.single, configs)
        bar.update(len(configs))
        stage("onnxruntime")
        res["onnx"] = {"skipped": "--no-onnx"} if a.no_onnx else onnx_bench(posts, bundle, a.single, preds, a.posts)
        bar.update(1)
        references: dict[str, dict[str, float]] = {}
        for (backend, runtime), name in zip(configs, names, strict=True):
            if name in preds and reference_key(backend, runtime) not in references:
                probs = preds[name].predict([posts[0]])[0].motive_probs
                references[reference_key(backend, runtime)] = dict(zip(_MOTIVES(), map(float, probs), strict=True))
        if a.aopc:
            stage(f"explanation methods on {names[-1]}")
            res["explain_methods"] = explain_methods_bench(preds.get(names[-1]), names[-1], posts[: a.aopc])
            bar.update(1)
        del preds
        if not a.no_http:
            res["http"] = {}
            for (backend, runtime), name in zip(configs, names, strict=True):
                stage(f"HTTP {name}")
                if "error" in res["inprocess"].get(name, {}):
                    res["http"][name] = {"error": res["inprocess"][name]["error"]}
                else:
                    res["http"][name] = http_bench(posts, a.models_dir, a.name, a.single, a.explain, backend,
                                                   a.threads, references, runtime)
                bar.update(1)
    res["load_avg_end"] = os.getloadavg()[0]
    print(render(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def _MOTIVES() -> tuple[str, ...]:  # noqa: N802 - a constant, imported late
    from sharelens.labels import MOTIVES

    return tuple(MOTIVES)


# -- the table -----------------------------------------------------------------------------------
def _get(d: dict, *keys: str):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v, spec: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def _ok(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "NO")


def render(r: dict) -> str:
    """A markdown table: one column per configuration, the last one's ratio to the first (the
    baseline), the target and whether the last configuration meets it."""
    names = r.get("configs") or [label(b, "lean") for b in r.get("backends", ["fp32"])]
    http, inproc = r.get("http", {}), r.get("inprocess", {})
    base, best = names[0], names[-1]
    header = ["metric", *[f"{n} (baseline)" if n == base and len(names) > 1 else n for n in names],
              f"{best} / baseline", f"target ({best})", "met"]
    rows: list[list[str]] = []
    notes: list[str] = []
    pad = [""] * (len(names) - 1)

    def col(section: dict, key: str, spec: str, unit: str = "") -> list[str]:
        return [_fmt(_get(section, n, key), spec, unit) if "error" not in section.get(n, {}) else "unavailable"
                for n in names]

    def ratio(section: dict, key: str, invert: bool = False) -> tuple[str, float | None]:
        a, b = _get(section, base, key), _get(section, best, key)
        if not a or not b or base == best:
            return "", None
        x = a / b if invert else b / a
        return f"x{x:.2f}", x

    def check(value: float | None, ok: bool | None) -> str:
        return _ok(None if value is None else ok)

    if http:
        cs = _get(http, best, "cold_start_s")
        rows.append(["cold start to /readyz", *col(http, "cold_start_s", ".2f", " s"), ratio(http, "cold_start_s")[0],
                     f"<= {TARGETS['cold_start_s']:.0f} s", check(cs, cs is not None and cs <= TARGETS["cold_start_s"])])
        p50 = _get(http, best, "single_p50_ms")
        text, _ = ratio(http, "single_p50_ms", invert=True)
        rows.append(["/predict single p50", *col(http, "single_p50_ms", ".1f", " ms"), text + (" faster" if text else ""),
                     f"<= {TARGETS['single_p50_ms']:.0f} ms",
                     check(p50, p50 is not None and p50 <= TARGETS["single_p50_ms"])])
        rows.append(["/predict single p95", *col(http, "single_p95_ms", ".1f", " ms"), "", "", ""])
        text, x = ratio(http, "batch_posts_per_s")
        rows.append(["/predict batch throughput (32/request)", *col(http, "batch_posts_per_s", ".1f", " posts/s"), text,
                     f">= x{TARGETS['batch_speedup']:.0f} baseline", check(x, x is not None and x >= TARGETS["batch_speedup"])])
        rows.append(["/predict explain p50 / p95",
                     *[f"{_fmt(_get(http, n, 'explain_p50_ms'), '.0f')} / {_fmt(_get(http, n, 'explain_p95_ms'), '.0f')} ms"
                       if "error" not in http.get(n, {}) else "unavailable" for n in names], "", "", ""])
        rows.append(["server memory when ready", *col(http, "server_rss_ready_mb", ".0f", " MiB"), "", "", ""])
        rss = _get(http, best, "server_rss_mb")
        rows.append(["server memory after the run", *col(http, "server_rss_mb", ".0f", " MiB"), ratio(http, "server_rss_mb")[0],
                     "<= 1.2 GB (1144 MiB)", check(rss, rss is not None and rss * 2**20 <= TARGETS["server_rss_bytes"])])
        rows.append(["server peak memory (VmHWM)", *col(http, "server_peak_rss_mb", ".0f", " MiB"), "", "", ""])
        served = []
        for n in names:
            backend, runtime = n.split()
            got, said = _get(http, n, "served_backend"), _get(http, n, "reported")
            if got is None:
                served.append("unavailable" if "error" in http.get(n, {}) else "not checked")
            else:
                fine = got == reference_key(backend, runtime) and said == n
                served.append(f"{said} ({'verified' if fine else 'EXPECTED ' + n})")
        rows.append(["what the server ran (/readyz + probabilities)", *served, "", "", ""])
    rows.append(["in-process load (imports already paid)", *col(inproc, "load_s", ".2f", " s"), "", "", ""])
    text, _ = ratio(inproc, "single_p50_ms", invert=True)
    rows.append(["in-process single p50", *col(inproc, "single_p50_ms", ".1f", " ms"),
                 text + (" faster" if text else ""), "", ""])
    text, x = ratio(inproc, "batch_posts_per_s")
    rows.append(["in-process batch throughput", *col(inproc, "batch_posts_per_s", ".1f", " posts/s"), text, "", ""])
    onnx_table, verdict = onnx_rows(r.get("onnx"))
    rows.extend([label_, value, *pad, "", "", ""] for label_, value in onnx_table)
    if "pipeline" in inproc:
        pl = inproc["pipeline"]
        rows.append(["transformers pipeline (fp32): single p50 / batch",
                     f"{pl['single_p50_ms']:.1f} ms / {pl['batch_posts_per_s']:.1f} posts/s", *pad, "", "", ""])
    for backend, a in (r.get("aopc") or {}).items():
        ratio_s = f"x{a['ratio']:.2f}" if a.get("ratio") is not None else "n/a"
        rows.append([f"AOPC ({backend}): top-k words / random", f"{a['attributed']:.3f} / {a['random']:.3f} "
                     f"({ratio_s}, {a['n_texts']} posts)", *pad, "", "", ""])
    for n in names:
        err = _get(inproc, n, "error")
        if err:
            notes.append(f"{n}: {err}")
    head = [f"model {r.get('model')}; {r.get('posts')} posts (median {r.get('median_chars')} chars); "
            f"{r.get('cpu_threads')} CPUs; servers run one single-threaded model call per core, "
            "explanations on all cores"]
    if r.get("load_avg_start") is not None:
        # Judged on the load before the run: by its end the benchmark's own servers load the cores.
        busy = (r.get("load_avg_start") or 0) > 0.5 * (r.get("cpu_threads") or 1)
        head.append(f"load average (1 min) {r['load_avg_start']:.2f} before the run, "
                    f"{_fmt(r.get('load_avg_end'), '.2f')} at its end"
                    + (" — the machine was busy before the run: figures are indicative only" if busy else ""))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda row: "| " + " | ".join(f"{str(c):<{w}}" for c, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    table = [fmt_row(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt_row, rows)]
    methods = render_explain_methods(r.get("explain_methods"))
    return "\n".join([*head, *table, *[f"Note: {n}" for n in notes], *verdict, *([""] if methods else []), *methods])


if __name__ == "__main__":
    raise SystemExit(main())
