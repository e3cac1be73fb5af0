"""How well can the motive head's probabilities be calibrated, and how well can ECE even be measured? (issue 11)

    python -m training.experiments.calibration [--bundle models/sharelens/v0004-20261130]

Read on the feed `validation` split only (its read posts); no test label is read. Each calibrator is fitted on
four of five validation folds and applied to the fifth (cross-fitted), so no figure is read on the posts that
fitted it: temperature scaling (what bundles ship, `calibration.json`) and vector scaling (a temperature and a
bias per motive, by NLL with an L2 penalty on the biases). The last rows are the ECE a perfectly calibrated model
would show on the same number of posts (labels drawn from the temperature-scaled probabilities themselves): the
estimator's own noise, the floor under any ECE target measured on a split of this size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.metrics import f1_score

from sharelens.labels import MOTIVE2ID
from sharelens.paths import JSONL_DIR, MODELS_DIR
from sharelens.predictor import Predictor
from sharelens.text import normalise_text
from training.evaluate import posts_of, read_records
from training.metrics import ece, fit_temperature

FOLDS = 5
FLOOR_DRAWS = 500


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits, 1)[np.arange(len(y)), y].mean())


def fit_vector_scaling(z: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    def loss(theta: np.ndarray) -> float:
        return _nll(z / np.exp(theta[0]) + theta[1:], y) + l2 * float((theta[1:] ** 2).sum())

    theta = minimize(loss, np.zeros(z.shape[1] + 1), method="L-BFGS-B").x
    return float(np.exp(theta[0])), theta[1:]


def _row(name: str, y: np.ndarray, p: np.ndarray) -> dict:
    top2 = float((np.argsort(-p, 1)[:, :2] == y[:, None]).any(1).mean())
    return {"calibrator": name, "macro_f1": float(f1_score(y, p.argmax(1), average="macro", labels=sorted(set(y)))),
            "top2": top2, "ece": ece(y, p)[0], "nll": float(-np.log(p[np.arange(len(y)), y]).mean())}


def study(z: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(y)), FOLDS)
    fitted = {"temperature": np.zeros_like(z), **{f"vector, L2 {l2:g}": np.zeros_like(z) for l2 in (0.01, 1.0)}}
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(y)), fold)
        t = fit_temperature(lambda t, r=rest: _nll(z[r] / t, y[r]))
        fitted["temperature"][fold] = softmax(z[fold] / t, 1)
        for l2 in (0.01, 1.0):
            tv, b = fit_vector_scaling(z[rest], y[rest], l2)
            fitted[f"vector, L2 {l2:g}"][fold] = softmax(z[fold] / tv + b, 1)
    rows = [_row("none", y, softmax(z, 1))] + [_row(k, y, p) for k, p in fitted.items()]
    p_ts = fitted["temperature"]
    floor = [ece(np.array([rng.choice(z.shape[1], p=p) for p in p_ts]), p_ts)[0] for _ in range(FLOOR_DRAWS)]
    return {"posts": int(len(y)), "rows": rows, "ece_of_a_perfectly_calibrated_model":
            {"mean": float(np.mean(floor)), "p95": float(np.percentile(floor, 95)), "draws": FLOOR_DRAWS}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=MODELS_DIR / "sharelens" / "v0004-20261130")
    ap.add_argument("--validation", type=Path, default=JSONL_DIR / "validation.jsonl")
    a = ap.parse_args(argv)
    rows = [r for r in read_records(a.validation) if r["motive"]]
    pred = Predictor.from_bundle(a.bundle)
    posts = posts_of(rows)
    raw, _ = pred.logits([normalise_text(p.text) for p in posts], context_ids=pred.context_ids(posts))
    out = study(raw.motive_logits.astype(np.float64), np.array([MOTIVE2ID[r["motive"]] for r in rows]))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
