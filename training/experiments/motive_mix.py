"""Post-hoc layers on a bundle's motive head, read on both validation populations (issue 11): a
log-linear mix with character TF-IDF + logistic regression, and a prior correction (logit adjustment).

    python -m training.experiments.cache --bundle models/sharelens/v0008-20261201
    python -m training.experiments.motive_mix [--bundle models/sharelens/v0008-20261201] [--refit-seeds 3]

Heads: the bundle's own motive head, and the product's motive refit (`fit_linear_head`, 60 epochs, as
`make train`) on the same frozen vectors. The TF-IDF model is `training.baselines.TfidfLogReg` trained on
the same read posts as the head. Every setting chosen here (mixing weight, correction strength) is
cross-fitted: the 869 read validation posts (feed `validation` + `ordinary_validation`) are cut into five
folds, the setting is chosen on four by the mean macro-F1 of the two populations (the motive keep rule) and
applied to the fifth. No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from sharelens.bundle import load_model, verify_bundle
from sharelens.labels import MOTIVE2ID, MOTIVES
from training.baselines import TfidfLogReg
from training.data import motive_class_weights
from training.experiments.common import TRAIN_SPLITS, VALIDATION_SPLITS
from training.experiments.motive_forward import load
from training.experiments.motive_ordinary import scores
from training.motive_refit import fit_linear_head

WEIGHTS = np.round(np.arange(0.0, 1.01, 0.1), 2)
TAUS = np.round(np.arange(0.0, 1.51, 0.25), 2)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def mixed(model_logp: np.ndarray, tfidf_logp: np.ndarray, log_prior: np.ndarray, w: float, tau: float) -> np.ndarray:
    return (1 - w) * model_logp + w * tfidf_logp - tau * log_prior


def keep_rule(logp: np.ndarray, y: np.ndarray, pop: np.ndarray) -> float:
    return float(np.mean([scores(logp[pop == p], y[pop == p])["macro_f1"] for p in np.unique(pop)]))


def cross_fitted(model_logp, tfidf_logp, log_prior, y, pop, grid, folds: int = 5, seed: int = 0):
    """Predictions where each fold's setting was chosen on the other folds; and the settings chosen."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for p in np.unique(pop):  # stratified by population
        idx = np.flatnonzero(pop == p)
        fold[idx] = rng.permutation(len(idx)) % folds
    out = np.zeros_like(model_logp)
    chosen = []
    for k in range(folds):
        fit, held = fold != k, fold == k
        best = max(grid, key=lambda s: keep_rule(mixed(model_logp[fit], tfidf_logp[fit], log_prior, *s), y[fit], pop[fit]))
        chosen.append(best)
        out[held] = mixed(model_logp[held], tfidf_logp[held], log_prior, *best)
    return out, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--refit-seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_mix.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = args.bundle.name
    train = {s: load(tag, s) for s in TRAIN_SPLITS}
    val = {s: load(tag, s) for s in VALIDATION_SPLITS}
    rows = [r for s in TRAIN_SPLITS for r in train[s][0]]
    z = torch.from_numpy(np.concatenate([train[s][1] for s in TRAIN_SPLITS]))
    y = torch.tensor([MOTIVE2ID[r["motive"]] for r in rows])
    vrows = [r for s in VALIDATION_SPLITS for r in val[s][0]]
    zv = torch.from_numpy(np.concatenate([val[s][1] for s in VALIDATION_SPLITS]))
    yv = np.array([MOTIVE2ID[r["motive"]] for r in vrows])
    pop = np.array([s for s in VALIDATION_SPLITS for _ in val[s][0]])
    log_prior = np.log(np.bincount(y.numpy(), minlength=len(MOTIVES)) / len(y))

    tfidf = TfidfLogReg(len(MOTIVES)).fit([SimpleNamespace(text=r["text"]) for r in rows], y.numpy())
    tfidf_logp = np.log(np.clip(tfidf.predict_proba([SimpleNamespace(text=r["text"]) for r in vrows]), 1e-9, 1))

    model, _ = load_model(verify_bundle(args.bundle), runtime="transformers")
    heads = {"bundle's head": [model.motive_head]}
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))
    heads["refit head"] = []
    for seed in range(args.refit_seeds):
        head = torch.nn.Linear(z.shape[1], len(MOTIVES))
        torch.manual_seed(seed)
        fit_linear_head(head, z, y, weight, 60, seed=seed)
        heads["refit head"].append(head)

    settings = {
        "as is": [(0.0, 0.0)],
        "+ TF-IDF mix": [(w, 0.0) for w in WEIGHTS],
        "+ prior correction": [(0.0, t) for t in TAUS],
        "+ TF-IDF mix + prior correction": [(w, t) for w in WEIGHTS for t in TAUS],
    }
    results = []
    for head_name, hs in heads.items():
        for setting, grid in settings.items():
            runs, chosen = [], []
            for head in hs:
                with torch.no_grad():
                    logp = log_softmax(head(zv).numpy())
                pred, ch = cross_fitted(logp, tfidf_logp, log_prior, yv, pop, grid)
                runs.append({s: scores(pred[pop == s], yv[pop == s]) for s in VALIDATION_SPLITS})
                chosen += ch
            row = {"head": head_name, "setting": setting, "heads": len(hs), "chosen": sorted(set(map(tuple, chosen)))}
            for s in VALIDATION_SPLITS:
                for k in ("macro_f1", "top2", "accuracy"):
                    row[f"{s}_{k}"] = round(float(np.mean([r[s][k] for r in runs])), 4)
            row["mean_macro_f1"] = round(float(np.mean([row[f"{s}_macro_f1"] for s in VALIDATION_SPLITS])), 4)
            results.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    tf = {s: scores(tfidf_logp[pop == s], yv[pop == s]) for s in VALIDATION_SPLITS}
    results.append({"head": "TF-IDF + LR alone", **{f"{s}_{k}": round(v, 4) for s in tf for k, v in tf[s].items()}})
    print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
