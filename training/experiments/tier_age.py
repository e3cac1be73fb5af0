"""The tier head read with the post's observed age (issue 10, item 5: right-censoring), checked
forward in time on validation only.

    python -m training.experiments.cache --bundle models/sharelens/v0008-20261201
    python -m training.experiments.tier_age [--bundle models/sharelens/v0008-20261201] [--seeds 5]

Why: a tier is a bucket of the counts *at the snapshot*. The feed's labelled posts were between 0.1
and 113 days old when crawled (training split: median 2.5 days), the later half of the feed
validation 3.3-4.3 days, the feed test posts 0.3-2.3 days (ages come from `posted_at` and
`observed_at`, not from labels). The head learns the age slot in training (`observed_age: true`) and
is served with it unknown, i.e. it predicts for a typical training snapshot. Read against counts taken
at a known age, the question is whether telling the head that age predicts them better.

Protocol as `tier_forward` (the shipped one): heads trained on the training splits plus the earlier
half of the validation splits (by posting date), read on the later half, five seeds. No test label is
read. Rows: the later half read with the age unknown (as served), with the observed age, and with a
fixed age (each bucket of the age slot), so a reader can see how the prediction moves with age.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sharelens.context_features import AGE_DAY_EDGES, SLOTS, ContextFeatures
from sharelens.labels import TIERS
from sharelens.modeling import median_tier
from training.experiments.tier_forward import halves
from training.experiments.tier_stack import load
from training.metrics import tier_metrics
from training.tier_refit import TierHeadSettings, _served_ids, _training_ids, fit_tier_head

AGE_SLOT = SLOTS.index("observed_age")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/tier_age.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    tag = args.bundle.name
    train = [load(tag, s) for s in ("train", "ordinary_train")]
    (fe, fl), (oe, ol) = halves(*load(tag, "validation")), halves(*load(tag, "ordinary_validation"))
    later = {"feed": fl, "ordinary": ol}
    parts = [*train, fe, oe]
    rows = [r for p in parts for r in p[0]]
    z = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    features = ContextFeatures.fit(rows, min_count=3)
    y = torch.tensor([TIERS.index(r["tier"]) for r in rows])
    ids_fit = _training_ids(features, rows, True)
    t0 = time.perf_counter()
    heads = [fit_tier_head(z, ids_fit, y, features.sizes(), replace(TierHeadSettings(), seed=s))
             for s in range(args.seeds)]
    fit_s = time.perf_counter() - t0

    readings: dict[str, callable] = {
        "age unknown (as served)": lambda vrows: _served_ids(features, vrows),
        "observed age": lambda vrows: _training_ids(features, vrows, True),
    }
    for bucket in range(1, len(AGE_DAY_EDGES) + 2):
        lo = 0 if bucket == 1 else AGE_DAY_EDGES[bucket - 2]
        hi = AGE_DAY_EDGES[bucket - 1] if bucket <= len(AGE_DAY_EDGES) else None
        name = f"fixed age {lo}-{hi} days" if hi else f"fixed age >= {lo} days"

        def fixed(vrows, b=bucket):
            ids = _served_ids(features, vrows)
            ids[:, AGE_SLOT] = b
            return ids
        readings[name] = fixed

    results = []
    for name, ids_of in readings.items():
        for domain, (vrows, xv) in later.items():
            yv = np.array([TIERS.index(r["tier"]) for r in vrows])
            ids = ids_of(vrows)
            each = [h.probabilities(torch.from_numpy(xv), ids) for h in heads]
            ms = [tier_metrics(yv, p) for p in each]
            pred = np.stack([median_tier(p) for p in each])
            row = {"reading": name, "domain": domain, "posts": len(vrows),
                   "qwk_mean": round(float(np.mean([m["qwk"] for m in ms])), 4),
                   "qwk_sd": round(float(np.std([m["qwk"] for m in ms])), 4),
                   "macro_f1_mean": round(float(np.mean([m["macro_f1"] for m in ms])), 4),
                   "predicted_share_by_tier_seed0": [round(float((pred[0] == k).mean()), 3) for k in range(len(TIERS))],
                   "true_share_by_tier": [round(float((yv == k).mean()), 3) for k in range(len(TIERS))]}
            results.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"fit_seconds": round(fit_s, 1), "rows": results}, ensure_ascii=False, indent=1))
    print(f"wrote {args.out} (heads fitted in {fit_s:.0f} s)")


if __name__ == "__main__":
    main()
