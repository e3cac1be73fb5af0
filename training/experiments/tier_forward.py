"""The tier head checked forward in time (issue 10, third round): does training on the most recent
posts help, and which head settings hold up on posts later than any it saw?

    python -m training.experiments.cache --bundle models/sharelens/v0002-20261130
    python -m training.experiments.tier_forward [--bundle models/sharelens/v0002-20261130] [--seeds 5]

Every row is read on the later half (by posting date) of the validation splits: feed `validation`
posted 2025-01-04..05 (218 posts), `ordinary_validation` after its median date. "train → later" trains
on the training splits alone (what `make train` did before); "train + earlier → later" also on the
earlier half of the validation splits (what `training/tier_refit.py` now does with all of them).
No test split is read. Heads are the product's (`training.tier_refit.fit_tier_head`) on the
fine-tuned encoder's cached pooled vectors; baselines are `training.baselines`, on the same posts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from sharelens.context_features import ContextFeatures
from sharelens.labels import TIERS
from sharelens.post import Post
from training.experiments.tier_stack import load
from training.metrics import tier_metrics
from training.tier_refit import TierHeadSettings, _served_ids, _training_ids, fit_tier_head, forward_halves

# settings rows: (name, changes from the chosen TierHeadSettings, context fields left out, weight of the earlier half)
SETTINGS: list[tuple[str, dict, tuple[str, ...], float]] = [
    ("chosen: 30 epochs, class balance 0.5, EMA 0.99", {}, (), 1.0),
    ("plain: unweighted, no EMA", {"ema": 0.0, "class_balance": 0.0}, (), 1.0),
    ("class balance 1 (inverse frequency)", {"class_balance": 1.0}, (), 1.0),
    ("no EMA", {"ema": 0.0}, (), 1.0),
    ("+ a text-only pass on every batch (weight 0.5)", {"text_only_weight": 0.5}, (), 1.0),
    ("60 epochs", {"epochs": 60}, (), 1.0),
    ("the earlier half weighted x2", {}, (), 2.0),
    ("the earlier half weighted x4", {}, (), 4.0),
    ("without vip", {}, ("vip",), 1.0),
    ("without posted_at", {}, ("posted_at",), 1.0),
    ("without author_history", {}, ("author_history",), 1.0),
    ("channels seen once are known (channel_min_count 1)", {"channel_min_count": 1}, (), 1.0),
    ("channels seen twice are known (channel_min_count 2)", {"channel_min_count": 2}, (), 1.0),
]


def halves(rows: list[dict], x: np.ndarray):
    early, late, cut = forward_halves(rows)
    if cut is None:
        raise SystemExit("the validation posts carry no posting dates: no forward check")
    return ([rows[i] for i in early], x[early]), ([rows[i] for i in late], x[late])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0002-20261130"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/tier_forward.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    from training.baselines import ContextLogReg, TfidfLogReg

    tag = args.bundle.name
    train = [load(tag, s) for s in ("train", "ordinary_train")]
    (fe, fl), (oe, ol) = halves(*load(tag, "validation")), halves(*load(tag, "ordinary_validation"))
    later = {"feed": fl, "ordinary": ol}
    results: list[dict] = []

    def record(protocol: str, who: str, probs: dict[str, np.ndarray], t0: float, spread: dict | None = None) -> None:
        for domain, (rows, _) in later.items():
            y = np.array([TIERS.index(r["tier"]) for r in rows])
            m = tier_metrics(y, probs[domain])
            row = {"protocol": protocol, "model": who, "domain": domain, "posts": len(rows),
                   "qwk": round(m["qwk"], 4), "macro_f1": round(m["macro_f1"], 4),
                   "seconds": round(time.perf_counter() - t0, 1), **((spread or {}).get(domain, {}))}
            results.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)

    for protocol, parts in (("train -> later", train), ("train + earlier -> later", [*train, fe, oe])):
        rows = [r for p in parts for r in p[0]]
        z = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        features = ContextFeatures.fit(rows, min_count=3)
        y = torch.tensor([TIERS.index(r["tier"]) for r in rows])
        posts = [Post.from_record(r) for r in rows]
        for who, base in (("context LR", ContextLogReg(len(TIERS), features)),
                          ("TF-IDF + context LR", ContextLogReg(len(TIERS), features, with_text=True)),
                          ("TF-IDF LR (text only)", TfidfLogReg(len(TIERS)))):
            t0 = time.perf_counter()
            base.fit(posts, y.numpy())
            record(protocol, who, {d: base.predict_proba([Post.from_record(r) for r in v[0]])
                                   for d, v in later.items()}, t0)
        recent = torch.tensor([False] * sum(len(p[0]) for p in train) + [True] * (len(rows) - sum(len(p[0]) for p in train)))
        for name, change, drop, recent_weight in SETTINGS if protocol.startswith("train +") else SETTINGS[:1]:
            t0 = time.perf_counter()
            change = dict(change)
            row_features = (ContextFeatures.fit(rows, min_count=change.pop("channel_min_count"))
                            if "channel_min_count" in change else features)
            settings = replace(TierHeadSettings(), **change)
            ids_fit = _training_ids(row_features, [{**r, **dict.fromkeys(drop)} for r in rows], True)
            weight = torch.where(recent, recent_weight, 1.0) if recent_weight != 1.0 else None
            heads = [fit_tier_head(z, ids_fit, y, row_features.sizes(), replace(settings, seed=s), sample_weight=weight)
                     for s in range(args.seeds)]
            for mode in ("full context", "text only"):
                probs, spread = {}, {}
                for d, (vrows, xv) in later.items():
                    served = _served_ids(row_features, [{**r, **dict.fromkeys(drop)} for r in vrows])
                    served = served if mode == "full context" else torch.zeros_like(served)
                    each = [h.probabilities(torch.from_numpy(xv), served) for h in heads]
                    yv = np.array([TIERS.index(r["tier"]) for r in vrows])
                    q = [tier_metrics(yv, p)["qwk"] for p in each]
                    probs[d] = each[0]
                    spread[d] = {"qwk_mean_of_seeds": round(float(np.mean(q)), 4), "qwk_sd": round(float(np.std(q)), 4),
                                 "settings": asdict(settings), "left_out": list(drop), "earlier_half_weight": recent_weight,
                                 "channels": len(row_features.channels)}
                record(protocol, f"head, {mode}: {name} (seed 0; mean and sd of {args.seeds} seeds beside)",
                       probs, t0, spread)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
