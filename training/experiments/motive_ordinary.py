"""Does the motive head gain from the ordinary accounts' read posts? (issue 11, round 4 of annotations)

    python -m training.experiments.cache --bundle models/sharelens/v0004-20261130
    python -m training.experiments.motive_ordinary [--bundle models/sharelens/v0004-20261130] [--seeds 3 | --seed-list 42 3 4]

The motive refit (`training.motive_refit.fit_linear_head`, as `make train` runs it: 60 epochs,
multi-sample dropout, inverse square-root class weights) on the frozen encoder's cached vectors, trained
on the read posts of the training splits with and without the ordinary accounts' (`ordinary_train`),
read on the feed `validation` split (what chooses) and on the read posts of `ordinary_validation`
(the new population's own figure). No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from sharelens.labels import MOTIVE2ID, MOTIVES
from training.data import motive_class_weights
from training.experiments.common import TRAIN_SPLITS
from training.experiments.motive_forward import load
from training.motive_refit import fit_linear_head


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    top2 = float(np.mean([t in np.argsort(-p)[:2] for t, p in zip(y, probs, strict=True)]))
    f1 = f1_score(y, probs.argmax(1), average="macro", labels=sorted(set(y.tolist())), zero_division=0)
    return {"macro_f1": float(f1), "top2": top2, "accuracy": float((probs.argmax(1) == y).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0004-20261130"))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1")
    ap.add_argument("--seed-list", type=int, nargs="+", help="these seeds instead (the product's refit uses 42)")
    ap.add_argument("--no-weights", action="store_true", help="only the rows without and with, at full weight")
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_ordinary.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = args.bundle.name
    parts = {s: load(tag, s) for s in TRAIN_SPLITS}
    read_on = {s: load(tag, s) for s in ("validation", "ordinary_validation")}
    results = []
    without = [s for s in TRAIN_SPLITS if s != "ordinary_train"]
    rows = (("training splits without ordinary_train", without, 1.0),
            ("training splits with ordinary_train's read posts", list(TRAIN_SPLITS), 1.0),
            ("... ordinary_train's posts weighted 0.5", list(TRAIN_SPLITS), 0.5),
            ("... ordinary_train's posts weighted 0.25", list(TRAIN_SPLITS), 0.25))
    for name, splits, ordinary_weight in rows[:2] if args.no_weights else rows:
        z = torch.from_numpy(np.concatenate([parts[s][1] for s in splits]))
        y = torch.tensor([MOTIVE2ID[r["motive"]] for s in splits for r in parts[s][0]])
        weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))
        sample_weight = torch.tensor([ordinary_weight if s == "ordinary_train" else 1.0
                                      for s in splits for _ in parts[s][0]]) if ordinary_weight != 1.0 else None
        per_seed: dict[str, list[dict]] = {s: [] for s in read_on}
        for seed in args.seed_list or range(args.seeds):
            head = torch.nn.Linear(z.shape[1], len(MOTIVES))
            fit_linear_head(head, z, y, weight, 60, seed=seed, sample_weight=sample_weight)
            for split, (rows, x) in read_on.items():
                if not rows:
                    continue
                with torch.no_grad():
                    probs = torch.softmax(head(torch.from_numpy(x)), -1).numpy()
                per_seed[split].append(scores(probs, np.array([MOTIVE2ID[r["motive"]] for r in rows])))
        for split, runs in per_seed.items():
            if not runs:
                continue
            row = {"trained_on": name, "ordinary_weight": ordinary_weight, "posts": len(y), "read_on": split, "read_posts": len(read_on[split][0]),
                   **{f"{k}_mean": round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]},
                   "macro_f1_sd": round(float(np.std([r["macro_f1"] for r in runs])), 4)}
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
