"""Tier experiments on the fine-tuned encoder's cached vectors (issue 10): heads, ensembles, decision rules.

    python -m training.experiments.cache --bundle models/sharelens/v0002-20261130
    python -m training.experiments.tier_stack [--bundle models/sharelens/v0002-20261130]

Read on the feed `validation` split (442) and `ordinary_validation` (427), context as served (no
observed age). Settings chosen on validation (a mixing weight, cut points) are cross-fitted: 5 folds,
each predicted with the setting chosen on the other four.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score, f1_score

from sharelens.context_features import observed_age_days
from sharelens.labels import TIERS
from sharelens.modeling import ContextFusion, median_tier, tier_probs_from_logits
from sharelens.post import Context, Post
from training.experiments.cache import cached
from training.experiments.common import TIER_DOMAINS, experiment_rows
from training.experiments.motive_head import cross_fitted

LEVELS = torch.arange(len(TIERS) - 1)


def load(tag: str, split: str) -> tuple[list[dict], np.ndarray]:
    rows = experiment_rows(split)
    vec = cached(tag, split, rows)
    if vec is None:
        raise SystemExit(f"no cache {tag!r} for {split}: run python -m training.experiments.cache first")
    keep = [i for i, r in enumerate(rows) if r["domain"] in TIER_DOMAINS]
    return [rows[i] for i in keep], vec[keep]


def qwk(y, pred) -> float:
    return float(cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(len(TIERS)))))


def mf1(y, pred) -> float:
    return float(f1_score(y, pred, average="macro", labels=sorted(set(y.tolist()))))


def fit_head(features, x, ids, y, epochs: int, seed: int, lr: float = 3e-3):
    """The product's tier head (tier_proj + ContextFusion + ordinal biases), as training/tier_refit.py."""
    torch.manual_seed(seed)
    proj = torch.nn.Linear(x.shape[1], 1, bias=False)
    bias = torch.nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))
    fuse = ContextFusion(x.shape[1], features.sizes())
    opt = torch.optim.AdamW([*proj.parameters(), bias, *fuse.parameters()], lr=lr, weight_decay=0.01)
    for _ in range(epochs):
        fuse.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            z = torch.nn.functional.dropout(x[b], 0.1)
            logit = proj(z) + fuse(z, ids[b]) + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, (y[b, None] > LEVELS).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    fuse.eval()

    def predict(xv, idsv):
        with torch.no_grad():
            return tier_probs_from_logits(proj(xv) + fuse(xv, idsv) + bias).numpy()

    return predict


def cut_decision(probs: np.ndarray, cuts) -> np.ndarray:
    """Tier from the expected tier index and three cut points (chosen to maximise QWK)."""
    ev = probs @ np.arange(len(TIERS))
    return np.searchsorted(np.sort(cuts), ev)


def best_cuts(probs, y) -> np.ndarray:
    """Coordinate search of three cut points on the expected tier (the 'optimised rounder')."""
    ev = probs @ np.arange(len(TIERS))
    cuts = np.array([0.5, 1.5, 2.5])
    grid = np.quantile(ev, np.linspace(0.01, 0.99, 99))
    for _ in range(3):
        for k in range(3):
            cuts[k] = max(grid, key=lambda c: qwk(y, np.searchsorted(np.sort(np.r_[cuts[:k], c, cuts[k + 1:]]), ev)))
    return np.sort(cuts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0002-20261130"))
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/tier_stack.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    from sharelens.predictor import Predictor
    from training.baselines import ContextLogReg

    pred = Predictor.from_bundle(args.bundle)
    features = pred.features
    tag = args.bundle.name
    train_rows, xt = [], []
    for s in ("train", "ordinary_train"):
        r, x = load(tag, s)
        train_rows += r
        xt.append(x)
    X = torch.from_numpy(np.concatenate(xt))
    ids_age = torch.tensor([features.encode(Context.from_record(r), observed_age_days(r.get("posted_at"),
                            r.get("observed_at"))) for r in train_rows])
    Y = torch.tensor([TIERS.index(r["tier"]) for r in train_rows])
    vals = {s: load(tag, s) for s in ("validation", "ordinary_validation")}

    def served_ids(rows):
        return torch.tensor([features.encode(Post.from_record(r).context) for r in rows])

    results: list[dict] = []

    def record(name, split, probs, t0, decide=median_tier, note=""):
        y = np.array([TIERS.index(r["tier"]) for r in vals[split][0]])
        p = decide(probs) if callable(decide) else decide
        row = {"setting": name, "split": split, "qwk": round(qwk(y, p), 4), "macro_f1": round(mf1(y, p), 4),
               "seconds": round(time.perf_counter() - t0, 1), "note": note}
        results.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)

    probs: dict[tuple[str, str], np.ndarray] = {}
    for split, (rows, xv) in vals.items():
        t0 = time.perf_counter()
        raw = pred.head_logits(xv, served_ids(rows).numpy())
        probs["v0002", split] = tier_probs_from_logits(torch.from_numpy(raw.tier_logits)).numpy()
        record("v0002 as saved (refit epoch chosen on this validation)", split, probs["v0002", split], t0)

    # several seeds of the refit head, fixed epochs, their distributions averaged
    for epochs in (30, 60):
        t0 = time.perf_counter()
        fits = [fit_head(features, X, ids_age, Y, epochs, seed) for seed in range(5)]
        for split, (rows, xv) in vals.items():
            each = [f(torch.from_numpy(xv), served_ids(rows)) for f in fits]
            record(f"refit head, {epochs} epochs, seed 0 alone", split, each[0], t0)
            probs[f"seeds{epochs}", split] = np.mean(each, axis=0)
            record(f"refit head, {epochs} epochs, mean of 5 seeds", split, probs[f"seeds{epochs}", split], t0)

    # context LR baselines fitted on the same posts (TF-IDF + context is the strongest)
    t0 = time.perf_counter()
    posts = [Post.from_record(r) for r in train_rows]
    lr = ContextLogReg(len(TIERS), features, with_text=True).fit(posts, Y.numpy())
    for split, (rows, _) in vals.items():
        probs["tfidf_ctx", split] = lr.predict_proba([Post.from_record(r) for r in rows])
        record("TF-IDF + context LR (baseline)", split, probs["tfidf_ctx", split], t0)

    for base in ("v0002", "seeds60"):
        for split, (rows, _) in vals.items():
            t0 = time.perf_counter()
            y = np.array([TIERS.index(r["tier"]) for r in rows])
            a, b = probs[base, split], probs["tfidf_ctx", split]

            def mix(w, idx, a=a, b=b):
                return w * a[idx] + (1 - w) * b[idx]

            def choose(rest, mix=mix, y=y):
                return max(np.linspace(0, 1, 11), key=lambda w: qwk(y[rest], median_tier(mix(w, rest))))

            record(f"{base} + TF-IDF/context LR, mixed (weight cross-fitted)", split,
                   cross_fitted(choose, mix, len(y)), t0, note=f"weight on all: {choose(np.arange(len(y))):.1f}")
            # cut points on the expected tier instead of the median
            t0 = time.perf_counter()
            oof = np.zeros(len(y), dtype=int)
            order = np.random.default_rng(0).permutation(len(y))
            for f in range(5):
                te = order[f::5]
                tr = np.setdiff1d(order, te)
                oof[te] = cut_decision(a[te], best_cuts(a[tr], y[tr]))
            record(f"{base}, QWK cut points on the expected tier (cross-fitted)", split, a, t0, decide=oof)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
