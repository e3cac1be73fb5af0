"""`make quantize`: export a bundle's int8 copy beside its weights, then measure what it costs.

    python -m training.quantize --model sharelens-fast --version v0001-20261123

writes <bundle>/int8/ (`sharelens.quantize`), then scores the held-out test split with both
backends through the evaluation code of `make eval` (`training.evaluate.evaluate_rows`) and
writes <bundle>/int8/accuracy.json: motive macro-F1, tier macro-F1 and QWK for fp32 and int8,
their differences in points, how often the two agree, and whether int8 stays within the target
of 0.5 macro-F1 points of fp32 on both heads.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np

from sharelens.errors import SharelensError
from sharelens.modeling import median_tier

TARGET_POINTS = 0.5  # |int8 - fp32| macro-F1, in points (0-100), on each head


def _scores(result: dict) -> dict:
    m, t = result.get("motive", {}).get("model", {}), result.get("tier", {}).get("model", {})
    return {"motive_macro_f1": m.get("macro_f1"), "motive_accuracy": m.get("accuracy"),
            "tier_macro_f1": t.get("macro_f1"), "tier_qwk": t.get("qwk"), "tier_accuracy": t.get("accuracy")}


def agreement(fp32, int8, texts: list[str]) -> dict:
    """How far the int8 probabilities are from fp32 on the same (normalised) texts."""
    mp0, tp0 = fp32.probabilities(fp32.logits(texts, progress="fp32")[0])
    mp1, tp1 = int8.probabilities(int8.logits(texts, progress="int8")[0])
    dm, dt = np.abs(mp1 - mp0).max(1), np.abs(tp1 - tp0).max(1)
    return {
        "posts": len(texts),
        "top_motive": float((mp0.argmax(1) == mp1.argmax(1)).mean()),
        "top_tier": float((median_tier(tp0) == median_tier(tp1)).mean()),
        "motive_prob_abs_diff": {"mean": float(np.abs(mp1 - mp0).mean()), "p99_of_max": float(np.quantile(dm, 0.99)),
                                 "max": float(dm.max())},
        "tier_prob_abs_diff": {"mean": float(np.abs(tp1 - tp0).mean()), "p99_of_max": float(np.quantile(dt, 0.99)),
                               "max": float(dt.max())},
    }


def calibration_texts(corpus, split: str, n: int, seed: int = 0) -> list[str]:
    """n posts of a training split, drawn with a fixed seed, normalised as at inference."""
    from sharelens.text import normalise_text

    if split not in corpus:
        raise SharelensError("E317", f"the corpus has no split {split!r} (has {', '.join(corpus)}); rebuild it "
                             "with `make data` or pick another split")
    rows = corpus[split]
    idx = np.random.default_rng(seed).permutation(len(rows))[:n]
    texts = [normalise_text(rows[int(i)]["text"]) for i in sorted(idx)]
    return [t for t in texts if t] or [" "]


def quantize_bundle(bundle: Path, evaluate: bool = True, split: str = "test",
                    data_dir: str = "data/build/corpus", check_hash: bool = True,
                    calibration_posts: int = 512, calibration_split: str = "train",
                    alpha: float | None = None) -> dict:
    """Export <bundle>/int8 (SmoothQuant-calibrated on `calibration_posts` training posts unless
    0) and, unless evaluate=False, write and return its accuracy report on the `split` posts."""
    from sharelens.bundle import write_json
    from sharelens.predictor import Predictor
    from sharelens.quantize import (
        ACCURACY,
        DEFAULT_ALPHA,
        INT8_DIR,
        activation_maxima,
        export_int8,
        full_range_activations,
    )
    from sharelens.text import normalise_text

    bundle = Path(bundle)
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    corpus = None
    if evaluate or calibration_posts > 0:
        from training.data import load_corpus
        from training.train import resolve_path

        corpus = load_corpus(resolve_path(data_dir))
    start = time.perf_counter()
    fp32 = Predictor.from_bundle(bundle, check_hash=check_hash)
    act_max, calibration = None, None
    if calibration_posts > 0:
        texts = calibration_texts(corpus, calibration_split, calibration_posts)
        # one post at a time: no padding token enters the activation maxima
        act_max = activation_maxima(fp32.model, partial(fp32.logits, texts, batch_size=1))
        calibration = {"split": calibration_split, "posts": len(texts), "seed": 0}
    out = export_int8(fp32.info, fp32.model, act_max, alpha, calibration)
    export_s = time.perf_counter() - start
    info = fp32.info
    del fp32
    doc: dict = {"bundle": str(bundle), "name": info.name, "version": info.version,
                 "export_s": round(export_s, 2), "smoothing": calibration and {"alpha": alpha, **calibration}}
    if not evaluate:
        return doc

    from training.evaluate import evaluate_rows

    if split not in corpus:
        raise SharelensError("E317", f"the corpus has no split {split!r} (has {', '.join(corpus)}); rebuild it "
                             "with `make data` or pick another --split")
    rows = list(corpus[split])
    import torch

    doc.update({"split": split, "posts": len(rows), "torch_threads": torch.get_num_threads(),
                "int8_activations": "8-bit" if full_range_activations() else "7-bit (reduce_range: no VNNI)"})
    preds = {}
    for backend in ("fp32", "int8"):
        t = time.perf_counter()
        pred = Predictor.from_bundle(bundle, check_hash=check_hash, backend=backend)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        result = evaluate_rows(pred, rows, baselines={})
        doc[backend] = {**_scores(result), "load_s": round(load_s, 3), "eval_s": round(time.perf_counter() - t, 2),
                        "motive_posts": result.get("motive", {}).get("model", {}).get("n", 0),
                        "tier_posts": result.get("tier", {}).get("model", {}).get("n", 0)}
        preds[backend] = pred
    diff = {}
    for key in ("motive_macro_f1", "tier_macro_f1", "tier_qwk", "motive_accuracy", "tier_accuracy"):
        a, b = doc["fp32"].get(key), doc["int8"].get(key)
        diff[key] = None if a is None or b is None else round(100 * (b - a), 3)
    doc["difference_points"] = diff
    f1_diffs = [diff[k] for k in ("motive_macro_f1", "tier_macro_f1") if diff[k] is not None]
    doc["target"] = {
        "rule": f"|int8 - fp32| <= {TARGET_POINTS} macro-F1 points on both heads",
        "met": bool(f1_diffs) and all(abs(d) <= TARGET_POINTS for d in f1_diffs),
        "no_drop_beyond_target": bool(f1_diffs) and all(d >= -TARGET_POINTS for d in f1_diffs),
    }
    doc["agreement"] = agreement(preds["fp32"], preds["int8"], [normalise_text(r["text"]) for r in rows])
    doc["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(out / ACCURACY, doc)
    doc["accuracy_path"] = str(bundle / INT8_DIR / ACCURACY)
    return doc


def render(doc: dict) -> str:
    sm = doc.get("smoothing")
    how = f"SmoothQuant a={sm['alpha']} on {sm['posts']} {sm['split']} posts" if sm else "no smoothing"
    lines = [f"{doc['name']} {doc['version']}: int8 export ({how}) written in {doc['export_s']:.1f} s"]
    if "fp32" not in doc:
        return "\n".join(lines)
    lines.append(f"{doc['split']} split, {doc['posts']} posts, int8 activations {doc['int8_activations']}, "
                 f"{doc['torch_threads']} torch thread(s)")
    lines.append(f"{'metric':<17} {'fp32':>7} {'int8':>7} {'diff (points)':>14}")
    for key in ("motive_macro_f1", "motive_accuracy", "tier_macro_f1", "tier_qwk"):
        a, b, d = doc["fp32"][key], doc["int8"][key], doc["difference_points"][key]
        if a is None:
            continue
        lines.append(f"{key:<17} {a:>7.4f} {b:>7.4f} {d:>+14.2f}")
    lines.append(f"{'load time (s)':<17} {doc['fp32']['load_s']:>7.2f} {doc['int8']['load_s']:>7.2f}")
    ag = doc["agreement"]
    lines.append(f"top motive agrees on {ag['top_motive']:.1%}, top tier on {ag['top_tier']:.1%}; motive probability "
                 f"|diff| mean {ag['motive_prob_abs_diff']['mean']:.4f}, max {ag['motive_prob_abs_diff']['max']:.3f}")
    t = doc["target"]
    lines.append(f"target ({t['rule']}): {'met' if t['met'] else 'NOT met'}"
                 + ("" if t["met"] else f" (no drop beyond it: {'yes' if t['no_drop_beyond_target'] else 'no'})"))
    lines.append(f"Report: {doc['accuracy_path']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sharelens", help="registry name")
    ap.add_argument("--version", default=None, help="version or alias (default: production, then latest)")
    ap.add_argument("--bundle", type=Path, help="a bundle folder (instead of --model/--version)")
    ap.add_argument("--split", default="test", help="held-out split to compare the backends on")
    ap.add_argument("--data-dir", default="data/build/corpus")
    ap.add_argument("--no-eval", action="store_true", help="export only")
    ap.add_argument("--calibration-posts", type=int, default=512,
                    help="training posts whose activations set the SmoothQuant scales (0: no smoothing)")
    ap.add_argument("--alpha", type=float, default=None, help="SmoothQuant migration strength (default 0.8)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    try:
        if a.bundle is not None:
            bundle = a.bundle
        else:
            from sharelens.registry import Registry
            from training.train import MODELS_DIR

            _, bundle = Registry(MODELS_DIR).resolve(a.model, a.version)
        doc = quantize_bundle(bundle, evaluate=not a.no_eval, split=a.split, data_dir=a.data_dir,
                              calibration_posts=a.calibration_posts, alpha=a.alpha)
    except SharelensError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
