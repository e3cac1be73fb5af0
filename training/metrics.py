"""Metrics for both heads, calibration error, and temperature fitting."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from sharelens.labels import MOTIVES, TIERS


def motive_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """y_true: motive ids; probs: (n, 10)."""
    y_pred = probs.argmax(1)
    labels = list(range(len(MOTIVES)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    present = [i for i in labels if s[i] > 0]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # macro over the motives present in this set: an absent motive has no recall to measure
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "macro_f1_ci95": bootstrap_ci(y_true, y_pred, len(MOTIVES), "macro_f1"),
        "top2_accuracy": float(np.mean([t in row for t, row in zip(y_true, top2, strict=True)])),
        "per_motive": {MOTIVES[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                    "support": int(s[i])} for i in labels},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def tier_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """The tier decided by the median of each distribution (`sharelens.modeling.median_tier`), the
    same rule for the model and the baselines; the argmax figures are kept for comparison."""
    from sharelens.modeling import median_tier

    y_pred = median_tier(probs)
    labels = list(range(len(TIERS)))
    present = sorted(set(int(x) for x in y_true))
    by_argmax = probs.argmax(1)
    return {
        "decision": "median",
        "argmax": {"qwk": float(cohen_kappa_score(y_true, by_argmax, labels=labels, weights="quadratic")),
                   "macro_f1": float(f1_score(y_true, by_argmax, labels=present, average="macro", zero_division=0))},
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "qwk": float(cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")),
        "qwk_ci95": bootstrap_ci(y_true, y_pred, len(TIERS), "qwk"),
        "macro_f1_ci95": bootstrap_ci(y_true, y_pred, len(TIERS), "macro_f1"),
        "mae": float(np.abs(y_true - y_pred).mean()),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def ece(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of the top-1 confidence, and the reliability-diagram bins."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total, rows = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            total += m.mean() * gap
            rows.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(correct[m].mean())})
    return float(total), rows


def motive_nll(logits: np.ndarray, y: np.ndarray):
    """Validation NLL of the motive logits as a function of the temperature (for `fit_temperature`)."""
    import torch

    lt, yt = torch.from_numpy(logits), torch.from_numpy(y)
    return lambda t: float(torch.nn.functional.cross_entropy(lt / t, yt))


def tier_nll(logits: np.ndarray, y: np.ndarray):
    """Held-out NLL of the ordinal tier logits as a function of the temperature (for `fit_temperature`)."""
    import torch

    from sharelens.modeling import tier_probs_from_logits

    lt = torch.from_numpy(logits)
    return lambda t: float(-np.log(tier_probs_from_logits(lt, t).numpy()[np.arange(len(y)), y] + 1e-12).mean())


def fit_temperature(nll_of_t, grid: np.ndarray | None = None) -> float:
    """The temperature minimising validation NLL: a 1-D search (robust, no gradients needed)."""
    grid = grid if grid is not None else np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    losses = [nll_of_t(float(t)) for t in grid]
    return float(grid[int(np.argmin(losses))])


def _macro_f1_from_confusion(c: np.ndarray) -> float:
    """Macro-F1 over the classes present in y_true (rows with support), as `motive_metrics`."""
    tp = np.diag(c).astype(float)
    support, predicted = c.sum(1), c.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def _qwk_from_confusion(c: np.ndarray) -> float:
    """Cohen's quadratic-weighted kappa from a confusion matrix (= sklearn's cohen_kappa_score)."""
    k = c.shape[0]
    n = c.sum()
    if n == 0:
        return 0.0
    w = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    expected = np.outer(c.sum(1), c.sum(0)) / n
    denom = (w * expected).sum()
    return float(1 - (w * c).sum() / denom) if denom > 0 else 0.0


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, metric: str, resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 ("macro_f1") or QWK ("qwk") over posts resampled
    with replacement: how far the figure could move on another draw of the same size. Confusion
    matrices by bincount, so 1,000 resamples of a few hundred posts take milliseconds."""
    rng = np.random.default_rng(seed)
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    n = len(y_true)
    if n == 0:
        return (0.0, 0.0)
    fn = _macro_f1_from_confusion if metric == "macro_f1" else _qwk_from_confusion
    idx = rng.integers(0, n, size=(resamples, n))
    cells = (y_true[idx] * n_classes + y_pred[idx])
    values = [fn(np.bincount(row, minlength=n_classes * n_classes).reshape(n_classes, n_classes)) for row in cells]
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return (float(lo), float(hi))
