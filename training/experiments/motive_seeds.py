"""How much one motive refit head depends on its seed, and what averaging heads does (issue 11).

    python -m training.experiments.cache --bundle models/sharelens/v0008-20261201
    python -m training.experiments.motive_seeds [--bundle models/sharelens/v0008-20261201]

The product's motive refit (`training.motive_refit.fit_linear_head`: 60 epochs, multi-sample dropout, inverse
square-root class weights) on the bundle's cached frozen vectors, trained on the read posts of the default
training splits, once per seed (42, the default, and 0-8), read on both validation populations; then heads
averaged (`training.motive_refit.average_linear_heads`: the mean of the heads' logits) over two disjoint sets of
five seeds and over all ten. No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sharelens.labels import MOTIVE2ID
from training.data import motive_class_weights
from training.experiments.common import TRAIN_SPLITS, VALIDATION_SPLITS
from training.experiments.motive_forward import load
from training.experiments.motive_ordinary import scores
from training.motive_refit import _fit_one, average_linear_heads

SEEDS = (42, 0, 1, 2, 3, 4, 5, 6, 7, 8)
GROUPS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 42), SEEDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_seeds.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = args.bundle.name
    train = {s: load(tag, s) for s in TRAIN_SPLITS}
    val = {s: load(tag, s) for s in VALIDATION_SPLITS}
    z = torch.from_numpy(np.concatenate([train[s][1] for s in TRAIN_SPLITS]))
    y = torch.tensor([MOTIVE2ID[r["motive"]] for s in TRAIN_SPLITS for r in train[s][0]])
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))

    def read(head: torch.nn.Linear) -> dict:
        row = {}
        for s in VALIDATION_SPLITS:
            with torch.no_grad():
                probs = torch.softmax(head(torch.from_numpy(val[s][1])), -1).numpy()
            got = scores(probs, np.array([MOTIVE2ID[r["motive"]] for r in val[s][0]]))
            row.update({f"{s}_macro_f1": round(got["macro_f1"], 4), f"{s}_top2": round(got["top2"], 4)})
        row["mean_macro_f1"] = round(float(np.mean([row[f"{s}_macro_f1"] for s in VALIDATION_SPLITS])), 4)
        return row

    heads = {seed: _fit_one(z.shape[1], z, y, weight, 60, seed) for seed in SEEDS}
    results = [{"heads": f"seed {seed}", **read(h)} for seed, h in heads.items()]
    results += [{"heads": f"mean of seeds {list(g)}", **read(average_linear_heads([heads[s] for s in g]))}
                for g in GROUPS]
    for row in results:
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
