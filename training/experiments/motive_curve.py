"""Learning curve of the motive refit head (issue 11): would more read posts move it?

    python -m training.experiments.cache --bundle models/sharelens/v0008-20261201
    python -m training.experiments.motive_curve [--bundle models/sharelens/v0008-20261201]

The product's refit (`training.motive_refit._fit_one`: 60 epochs, multi-sample dropout, inverse
square-root class weights) on the bundle's cached frozen vectors, trained on a random fraction of the
read posts of the default training splits (the same fraction of every split, so the mix of sources
stays), three draws per fraction, each with its own seed; read on both validation populations. The
encoder stays the one fine-tuned on all of them, so the curve shows what more posts give the head,
not what they would give a fine-tune (an upper bound on the head's side, flattering small fractions a
little). No test split is read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sharelens.labels import MOTIVE2ID
from training.data import motive_class_weights
from training.experiments.common import TRAIN_SPLITS, VALIDATION_SPLITS
from training.experiments.motive_forward import load
from training.experiments.motive_ordinary import scores
from training.motive_refit import _fit_one

FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
DRAWS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_curve.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = args.bundle.name
    train = {s: load(tag, s) for s in TRAIN_SPLITS}
    val = {s: load(tag, s) for s in VALIDATION_SPLITS}
    results = []
    for fraction in FRACTIONS:
        rows = []
        for draw in range(DRAWS):
            rng = np.random.default_rng(1000 * draw + int(fraction * 1000))
            picked = {s: np.sort(rng.permutation(len(train[s][0]))[:max(1, round(fraction * len(train[s][0])))])
                      for s in TRAIN_SPLITS}
            z = torch.from_numpy(np.concatenate([train[s][1][picked[s]] for s in TRAIN_SPLITS]))
            y = torch.tensor([MOTIVE2ID[train[s][0][i]["motive"]] for s in TRAIN_SPLITS for i in picked[s]])
            weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))
            t0 = time.perf_counter()
            head = _fit_one(z.shape[1], z, y, weight, 60, draw)
            row = {"fraction": fraction, "draw": draw, "posts": len(y), "seconds": round(time.perf_counter() - t0, 1)}
            for s in VALIDATION_SPLITS:
                with torch.no_grad():
                    probs = torch.softmax(head(torch.from_numpy(val[s][1])), -1).numpy()
                got = scores(probs, np.array([MOTIVE2ID[r["motive"]] for r in val[s][0]]))
                row.update({f"{s}_macro_f1": round(got["macro_f1"], 4), f"{s}_top2": round(got["top2"], 4)})
            row["mean_macro_f1"] = round(float(np.mean([row[f"{s}_macro_f1"] for s in VALIDATION_SPLITS])), 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
        summary = {"fraction": fraction, "posts": rows[0]["posts"], "draws": len(rows),
                   **{k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]
                      if k.endswith(("macro_f1", "top2"))},
                   "mean_macro_f1_sd": round(float(np.std([r["mean_macro_f1"] for r in rows])), 4)}
        print("SUMMARY", json.dumps(summary), flush=True)
        results.append({"summary": summary, "draws": rows})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
