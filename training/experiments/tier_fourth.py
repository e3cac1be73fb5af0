"""Tier head, fourth round (issue 10): two levers the third round left untried, checked forward in time.

    python -m training.experiments.cache --bundle models/sharelens/v0004-20261130
    python -m training.experiments.tier_fourth [--bundle models/sharelens/v0004-20261130] [--repeats 5] [--members 5]

Protocol as `training.experiments.tier_forward` ("train + earlier -> later"): heads trained on the
training splits plus the earlier half (by posting date) of the validation splits, read on their
later half, context as served. No test split is read.

1. An ensemble: the mean of the tier probabilities of `--members` heads that differ only in their
   seed. The third round saw one seed's QWK spread by ±0.02; does averaging lift the level too?
2. Author history from the recent labelled posts: the corpus computes `author_history` from the
   training-period pool only (`train`, `excluded`; `ordinary_train`), so a validation or test post
   whose author posted in an earlier *validation* week has no history, although the tier head now
   trains on those posts. Here the history pool grows by the earlier half of each validation split
   (never by the later half: a later post's history is built from what the head could have known),
   and the history of every validation post is recomputed from it.

Each row is repeated `--repeats` times with fresh seeds (mean ± sd beside the first repeat).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sharelens.context_features import ContextFeatures
from sharelens.labels import TIERS
from training.corpus.build import HISTORY_POOLS, author_history_from
from training.experiments.tier_stack import load
from training.metrics import tier_metrics
from training.tier_refit import TierHeadSettings, _served_ids, _training_ids, fit_tier_head, forward_halves


def recent_history(rows_by_split: dict[str, list[dict]]) -> dict[str, dict | None]:
    """post_id -> author_history with each validation split's earlier half in the pool."""
    from training.corpus.build import prepare

    records = prepare().records
    cuts = {}
    for split, rows in rows_by_split.items():
        _, _, cuts[split] = forward_halves(rows)
    pool_splits = {domain: set(splits) for domain, splits in HISTORY_POOLS.items()}

    def in_pool(r: dict) -> bool:
        if r["split"] in pool_splits.get(r["domain"], ()):
            return True
        cut = cuts.get(r["split"])
        return cut is not None and str(r.get("posted_at") or "")[:10] <= cut

    wanted = {r["post_id"] for rows in rows_by_split.values() for r in rows}
    history = author_history_from([r for r in records if in_pool(r)], [r for r in records if r["post_id"] in wanted])
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0004-20261130"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/tier_fourth.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    tag = args.bundle.name
    train = [load(tag, s) for s in ("train", "ordinary_train")]
    val = {s: load(tag, s) for s in ("validation", "ordinary_validation")}
    new_history = recent_history({s: v[0] for s, v in val.items()})
    results: list[dict] = []

    for history in ("training period (as shipped)", "+ earlier half of validation"):
        early_parts, later = [], {}
        for split, (rows, x) in val.items():
            if history.startswith("+"):
                rows = [{**r, "author_history": new_history[r["post_id"]]} for r in rows]
            first, second, _ = forward_halves(rows)
            early_parts.append(([rows[i] for i in first], x[first]))
            later["feed" if split == "validation" else "ordinary"] = ([rows[i] for i in second], x[second])
        covered = {d: sum(r["author_history"] is not None for r in v[0]) for d, v in later.items()}
        parts = [*train, *early_parts]
        rows = [r for p in parts for r in p[0]]
        z = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        features = ContextFeatures.fit(rows, min_count=3)
        y = torch.tensor([TIERS.index(r["tier"]) for r in rows])
        ids = _training_ids(features, rows, True)
        for members in sorted({1, args.members}):
            t0 = time.perf_counter()
            heads = [[fit_tier_head(z, ids, y, features.sizes(), TierHeadSettings(seed=rep * members + m))
                      for m in range(members)] for rep in range(args.repeats)]
            for mode in ("full context", "text only"):
                for d, (vrows, xv) in later.items():
                    served = _served_ids(features, vrows)
                    served = served if mode == "full context" else torch.zeros_like(served)
                    yv = np.array([TIERS.index(r["tier"]) for r in vrows])
                    scores = []
                    for group in heads:
                        p = np.mean([h.probabilities(torch.from_numpy(xv), served) for h in group], axis=0)
                        scores.append(tier_metrics(yv, p))
                    q = [s["qwk"] for s in scores]
                    row = {"history": history, "members": members, "mode": mode, "domain": d, "posts": len(vrows),
                           "with_history": covered[d], "qwk": round(q[0], 4), "macro_f1": round(scores[0]["macro_f1"], 4),
                           "qwk_mean": round(float(np.mean(q)), 4), "qwk_sd": round(float(np.std(q)), 4),
                           "macro_f1_mean": round(float(np.mean([s["macro_f1"] for s in scores])), 4),
                           "repeats": args.repeats, "seconds": round(time.perf_counter() - t0, 1)}
                    results.append(row)
                    print(json.dumps(row, ensure_ascii=False), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
