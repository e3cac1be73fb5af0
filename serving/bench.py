"""`make bench`: what a user of the API will see, measured on this machine, for the unoptimised
fp32 eager path and the optimised int8 path side by side in the same run.

For each backend (`--backends fp32,int8`), a fresh server process (SHARELENS_BACKEND) is measured:
- cold start: process start -> /readyz 200 (model loaded and warmed), over HTTP;
- single-text /predict latency (p50/p95) without explanations, sequential, real posts;
- batch throughput (posts/s, batches of 32);
- /predict with explanations (p50);
- resident memory of the server process after all of it;
- which backend the server really ran: its probabilities are compared with both in-process
  predictors (a server without the SHARELENS_BACKEND setting would silently serve fp32).
In this process: single-text p50 and batch throughput of sharelens' Predictor per backend, and a
plain `transformers` pipeline("text-classification") over the same encoder weights (a
sequence-classification model built from the bundle's encoder; its pooler/head differ, the
compute is the same); explanation faithfulness: AOPC comprehensiveness vs random deletion
(serving.faithfulness) per backend (explanations are the fp32 network's; rescoring uses the backend).

Posts come from the held-out test split (data/build/jsonl/test.jsonl): real length, real text.
Targets (int8): batch throughput >= 2x fp32, single p50 <= 20 ms, server memory <= 1.2 GB,
cold start <= 5 s.
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


BACKENDS = ("fp32", "int8")
TARGETS = {"batch_speedup": 2.0, "single_p50_ms": 20.0, "server_rss_bytes": 1.2e9, "cold_start_s": 5.0}

# Until serving.settings has a `backend` field, a server is started through this shim: it makes
# Predictor.from_bundle default to $SHARELENS_BACKEND, which is what the setting will do.
_SHIM = ("import os, sys; from serving.bench import patch_backend; patch_backend(os.environ['SHARELENS_BACKEND']); "
         "from serving.cli import main; sys.exit(main(['serve']))")


def server_has_backend_setting() -> bool:
    from serving.settings import Settings

    return "backend" in Settings.model_fields


def patch_backend(backend: str) -> None:
    """Make Predictor.from_bundle load `backend` unless told otherwise (the fallback shim)."""
    from sharelens.predictor import Predictor

    original = Predictor.from_bundle.__func__  # type: ignore[attr-defined]

    def from_bundle(cls, path, device: str = "cpu", check_hash: bool = True, backend: str = backend):
        return original(cls, path, device=device, check_hash=check_hash, backend=backend)

    Predictor.from_bundle = classmethod(from_bundle)  # type: ignore[method-assign]


def server_command(backend: str) -> tuple[list[str], str]:
    """The command that starts a server for `backend`, and how the backend reaches it."""
    if server_has_backend_setting():
        return [sys.executable, "-m", "serving.cli", "serve"], "SHARELENS_BACKEND setting"
    if backend == "fp32":
        return [sys.executable, "-m", "serving.cli", "serve"], "serving's default (it has no SHARELENS_BACKEND setting yet)"
    return [sys.executable, "-c", _SHIM], "bench shim (serving has no SHARELENS_BACKEND setting yet)"


def server_env(port: int, models_dir: Path, model_name: str, backend: str, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "SHARELENS_PORT": str(port), "SHARELENS_MODELS_DIR": str(models_dir),
           "SHARELENS_MODEL_NAME": model_name, "SHARELENS_BACKEND": backend}
    if threads:
        env["SHARELENS_TORCH_THREADS"] = str(threads)
    return env


def wait_ready(proc: subprocess.Popen, base: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"server exited: {err}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (the server drains in-flight requests), then SIGKILL if it outlives the grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _motive_probs(response: dict) -> dict[str, float]:
    return {p["motive"]: p["probability"] for p in response["results"][0]["motive"]["probabilities"]}


def which_backend(served: dict[str, float], references: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The backend whose in-process probabilities the server's are closest to, and the gap."""
    gaps = {b: max(abs(served[m] - ref[m]) for m in ref) for b, ref in references.items()}
    best = min(gaps, key=gaps.__getitem__)
    return best, gaps[best]


def http_bench(posts: list[str], models_dir: Path, model_name: str, single_n: int, explain_n: int,
               backend: str = "fp32", threads: int | None = None,
               references: dict[str, dict[str, float]] | None = None) -> dict:
    import httpx
    import psutil

    port = _free_port()
    cmd, via = server_command(backend)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=server_env(port, models_dir, model_name, backend, threads),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    out: dict = {"backend_via": via}
    try:
        wait_ready(proc, base)
        out["cold_start_s"] = time.perf_counter() - t0
        with httpx.Client(base_url=base, timeout=120) as client:
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
    finally:
        stop_server(proc)
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
    pipe = pipeline("text-classification", model=seqcls, tokenizer=pred.tokenizer, device=-1, top_k=None,
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


def inprocess_bench(posts: list[str], bundle: Path, single_n: int, backends: tuple[str, ...] = ("fp32",),
                    pipeline: bool = True) -> tuple[dict, dict]:
    """({backend or "pipeline": figures}, {backend: loaded Predictor}); a backend that cannot be
    loaded (no int8 export) gets {"error": message} instead of figures."""
    from sharelens.errors import SharelensError
    from sharelens.predictor import Predictor

    out: dict = {}
    preds: dict = {}
    for backend in backends:
        t = time.perf_counter()
        try:
            pred = Predictor.from_bundle(bundle, backend=backend)
        except SharelensError as exc:
            out[backend] = {"error": str(exc)}
            continue
        load_s = time.perf_counter() - t
        out[backend] = {"load_s": load_s, **predictor_bench(pred, posts, single_n)}
        preds[backend] = pred
    if pipeline and "fp32" in preds:
        out["pipeline"] = pipeline_bench(preds["fp32"], posts, single_n)
    return out, preds


def main(argv: list[str] | None = None) -> int:
    from sharelens.errors import SharelensError
    from sharelens.registry import Registry

    ap = argparse.ArgumentParser(description="sharelens benchmark: fp32 eager vs int8, side by side")
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("SHARELENS_MODELS_DIR", REPO / "models")))
    ap.add_argument("--name", default=os.environ.get("SHARELENS_MODEL_NAME", "sharelens"))
    ap.add_argument("--model", default=None, help="alias or version (default: production, then latest)")
    ap.add_argument("--posts", type=Path, default=REPO / "data/build/jsonl/test.jsonl")
    ap.add_argument("--n", type=int, default=256, help="posts for throughput")
    ap.add_argument("--single", type=int, default=100, help="sequential single-text requests")
    ap.add_argument("--explain", type=int, default=10, help="requests with explanations")
    ap.add_argument("--aopc", type=int, default=50, help="posts for the faithfulness figure (0: skip)")
    ap.add_argument("--backends", default="fp32,int8", help="comma-separated, of fp32, int8")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads here and in the servers (SHARELENS_TORCH_THREADS; default: torch's)")
    ap.add_argument("--no-http", action="store_true", help="skip the server measurements")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    backends = tuple(b.strip() for b in a.backends.split(",") if b.strip())
    if not backends or any(b not in BACKENDS for b in backends):
        print(f"Error E431: --backends takes a comma-separated list of {', '.join(BACKENDS)}", file=sys.stderr)
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

    if a.threads:
        torch.set_num_threads(a.threads)
    posts = load_posts(a.posts, a.n)
    lengths = sorted(len(p) for p in posts)
    res: dict = {"model": f"{a.name} {version}", "posts": len(posts), "median_chars": lengths[len(lengths) // 2],
                 "cpu_threads": os.cpu_count(), "torch_threads": torch.get_num_threads(), "backends": list(backends),
                 "load_avg_start": os.getloadavg()[0]}
    res["inprocess"], preds = inprocess_bench(posts, bundle, a.single, backends)
    references = {b: dict(zip(_MOTIVES(), map(float, p.predict([posts[0]])[0].motive_probs), strict=True))
                  for b, p in preds.items()}
    if a.aopc:
        from dataclasses import asdict

        from serving.faithfulness import aopc

        res["aopc"] = {b: asdict(aopc(p, posts[: a.aopc])) for b, p in preds.items()}
    del preds
    if not a.no_http:
        res["http"] = {}
        for backend in backends:
            if "error" in res["inprocess"].get(backend, {}):
                res["http"][backend] = {"error": res["inprocess"][backend]["error"]}
                continue
            res["http"][backend] = http_bench(posts, a.models_dir, a.name, a.single, a.explain, backend,
                                              a.threads, references)
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
    """A markdown table: one column per backend, the int8/fp32 ratio, the target and whether int8 meets it."""
    backends = r.get("backends", ["fp32"])
    http, inproc = r.get("http", {}), r.get("inprocess", {})
    f, q = "fp32", "int8"
    header = ["metric", *[f"{b} eager" if b == "fp32" else b for b in backends], "int8 / fp32", "target (int8)", "met"]
    rows: list[list[str]] = []
    notes: list[str] = []

    def col(section: dict, key: str, spec: str, unit: str = "") -> list[str]:
        return [_fmt(_get(section, b, key), spec, unit) if "error" not in section.get(b, {}) else "unavailable"
                for b in backends]

    def ratio(section: dict, key: str, invert: bool = False) -> tuple[str, float | None]:
        a, b = _get(section, f, key), _get(section, q, key)
        if not a or not b:
            return "", None
        x = a / b if invert else b / a
        return f"x{x:.2f}", x

    if http:
        cs = _get(http, q, "cold_start_s")
        rows.append(["cold start to /readyz", *col(http, "cold_start_s", ".2f", " s"), ratio(http, "cold_start_s")[0],
                     f"<= {TARGETS['cold_start_s']:.0f} s", _ok(None if cs is None else cs <= TARGETS["cold_start_s"])])
        p50 = _get(http, q, "single_p50_ms")
        rows.append(["/predict single p50", *col(http, "single_p50_ms", ".1f", " ms"),
                     ratio(http, "single_p50_ms", invert=True)[0] + (" faster" if ratio(http, "single_p50_ms")[0] else ""),
                     f"<= {TARGETS['single_p50_ms']:.0f} ms",
                     _ok(None if p50 is None else p50 <= TARGETS["single_p50_ms"])])
        rows.append(["/predict single p95", *col(http, "single_p95_ms", ".1f", " ms"), "", "", ""])
        text, x = ratio(http, "batch_posts_per_s")
        rows.append(["/predict batch throughput (32/request)", *col(http, "batch_posts_per_s", ".1f", " posts/s"), text,
                     f">= x{TARGETS['batch_speedup']:.0f} fp32", _ok(None if x is None else x >= TARGETS["batch_speedup"])])
        rows.append(["/predict explain p50 / p95",
                     *[f"{_fmt(_get(http, b, 'explain_p50_ms'), '.0f')} / {_fmt(_get(http, b, 'explain_p95_ms'), '.0f')} ms"
                       if "error" not in http.get(b, {}) else "unavailable" for b in backends], "", "", ""])
        rss = _get(http, q, "server_rss_mb")
        rows.append(["server resident memory", *col(http, "server_rss_mb", ".0f", " MiB"), ratio(http, "server_rss_mb")[0],
                     "<= 1.2 GB (1144 MiB)", _ok(None if rss is None else rss * 2**20 <= TARGETS["server_rss_bytes"])])
        served = []
        for b in backends:
            got = _get(http, b, "served_backend")
            if got is None:
                served.append("unavailable" if "error" in http.get(b, {}) else "not checked")
            else:
                served.append(f"{got} ({'verified' if got == b else 'EXPECTED ' + b})")
        rows.append(["backend the server ran", *served, "", "", ""])
        via = _get(http, q, "backend_via")
        if via and "shim" in via:
            notes.append(f"int8 server started through the {via}: set SHARELENS_BACKEND=int8 once serving reads it.")
    rows.append(["in-process load", *col(inproc, "load_s", ".2f", " s"), ratio(inproc, "load_s")[0], "", ""])
    rows.append(["in-process single p50", *col(inproc, "single_p50_ms", ".1f", " ms"),
                 ratio(inproc, "single_p50_ms", invert=True)[0] + (" faster" if ratio(inproc, "single_p50_ms")[0] else ""),
                 "", ""])
    text, x = ratio(inproc, "batch_posts_per_s")
    rows.append(["in-process batch throughput", *col(inproc, "batch_posts_per_s", ".1f", " posts/s"), text,
                 f">= x{TARGETS['batch_speedup']:.0f} fp32", _ok(None if x is None else x >= TARGETS["batch_speedup"])])
    if "pipeline" in inproc:
        pl = inproc["pipeline"]
        rows.append(["transformers pipeline (fp32): single p50 / batch",
                     f"{pl['single_p50_ms']:.1f} ms / {pl['batch_posts_per_s']:.1f} posts/s",
                     *[""] * (len(backends) - 1), "", "", ""])
    for b in backends:
        a = _get(r, "aopc", b)
        if a:
            ratio_s = f"x{a['ratio']:.2f}" if a.get("ratio") is not None else "n/a"
            rows.append([f"AOPC ({b}): top-k words / random", f"{a['attributed']:.3f} / {a['random']:.3f} ({ratio_s}, "
                         f"{a['n_texts']} posts)", *[""] * (len(backends) - 1), "", "", ""])
    for b in backends:
        err = _get(inproc, b, "error")
        if err:
            notes.append(f"{b}: {err}")
    head = [f"model {r.get('model')}; {r.get('posts')} posts (median {r.get('median_chars')} chars); "
            f"{r.get('cpu_threads')} CPUs, {r.get('torch_threads')} torch thread(s)"]
    if r.get("load_avg_start") is not None:
        head.append(f"load average (1 min) {r['load_avg_start']:.2f} at start, {_fmt(r.get('load_avg_end'), '.2f')} at end"
                    + (" — the machine was busy: figures are indicative only" if max(
                        r.get("load_avg_start") or 0, r.get("load_avg_end") or 0) > 0.5 * (r.get("cpu_threads") or 1) else ""))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda row: "| " + " | ".join(f"{str(c):<{w}}" for c, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    table = [fmt_row(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt_row, rows)]
    return "\n".join([*head, *table, *[f"Note: {n}" for n in notes]])


if __name__ == "__main__":
    raise SystemExit(main())
