"""Would the motive head, like the tier head, gain from the most recent read posts? (issue 11)

    python -m training.experiments.cache --bundle models/sharelens/v0004-20261130
    python -m training.experiments.motive_forward [--bundle models/sharelens/v0004-20261130]

The motive refit (`training.motive_refit.fit_linear_head`, 60 epochs, multi-sample dropout, inverse
square-root class weights) trained on the read posts of the training splits, with and without the
earlier half of the feed validation split (by posting date, `training.tier_refit.forward_cut`), read on
its later half (218 read posts). Three seeds each. No test split is read.
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
from training.experiments.cache import cached
from training.experiments.common import TRAIN_SPLITS, experiment_rows
from training.experiments.tier_forward import halves
from training.motive_refit import fit_linear_head


def load(tag: str, split: str) -> tuple[list[dict], np.ndarray]:
    rows = experiment_rows(split)
    vectors = cached(tag, split, rows)
    if vectors is None:
        raise SystemExit(f"no cache {tag!r} for {split}: run python -m training.experiments.cache first")
    keep = [i for i, r in enumerate(rows) if r.get("motive")]
    return [rows[i] for i in keep], vectors[keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0004-20261130"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_forward.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    train = [load(args.bundle.name, s) for s in TRAIN_SPLITS]
    rows, x = load(args.bundle.name, "validation")
    earlier, (late_rows, x_late_np) = halves(rows, x)
    y_late = np.array([MOTIVE2ID[r["motive"]] for r in late_rows])
    x_late = torch.from_numpy(x_late_np)
    results = []
    for name, parts in (("training splits", train), ("+ earlier half", [*train, earlier]),
                        ("+ earlier half, three times", [*train, earlier, earlier, earlier])):
        z = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        y = torch.tensor([MOTIVE2ID[r["motive"]] for p in parts for r in p[0]])
        weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))
        scores = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            head = torch.nn.Linear(z.shape[1], len(MOTIVES))
            fit_linear_head(head, z, y, weight, 60, seed=seed)
            with torch.no_grad():
                probs = torch.softmax(head(x_late), -1).numpy()
            top2 = np.mean([t in np.argsort(-p)[:2] for t, p in zip(y_late, probs, strict=True)])
            f1 = f1_score(y_late, probs.argmax(1), average="macro", labels=sorted(set(y_late.tolist())), zero_division=0)
            scores.append((f1, top2, float((probs.argmax(1) == y_late).mean())))
        s = np.array(scores)
        results.append({"trained_on": name, "posts": len(y), "later_posts": len(late_rows),
                        "macro_f1_mean": round(float(s[:, 0].mean()), 4), "macro_f1_sd": round(float(s[:, 0].std()), 4),
                        "top2_mean": round(float(s[:, 1].mean()), 4), "accuracy_mean": round(float(s[:, 2].mean()), 4)})
        print(f"{name}: {len(y)} posts; later half ({len(late_rows)}): macro-F1 {s[:, 0].mean():.3f} ± {s[:, 0].std():.3f}, "
              f"top-2 {s[:, 1].mean():.3f}, accuracy {s[:, 2].mean():.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
