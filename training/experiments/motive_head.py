"""Motive-head experiments on cached vectors (issue 11): seconds a row instead of an hour.

    python -m training.experiments.cache --bundle models/sharelens/v0002-20261130
    python -m training.experiments.cache --base [--prefix "query: "]
    python -m training.experiments.motive_head [--bundle models/sharelens/v0002-20261130]

Every figure is read on the feed `validation` split (442 read posts), never on a test split. Where a
setting is itself chosen on validation (a mixing weight, a prior correction), the figure is the
cross-fitted one: 5 folds of validation, each predicted with the setting chosen on the other four,
so the number is not read on the posts that chose it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from sharelens.labels import MOTIVE2ID, MOTIVES
from training.experiments.cache import cached
from training.experiments.common import TRAIN_SPLITS, experiment_rows
from training.metrics import ece, fit_temperature, motive_metrics

K = len(MOTIVES)
SEEDS = 3  # heads are trained this many times; rows give the mean


def load(tag: str) -> dict:
    """train/validation vectors, primary ids, secondary ids (-1: none) and texts of the read posts."""
    out = {}
    for part, splits in (("train", TRAIN_SPLITS), ("validation", ("validation",))):
        xs, ys, y2s, texts = [], [], [], []
        for split in splits:
            rows = experiment_rows(split)
            vec = cached(tag, split, rows)
            if vec is None:
                raise SystemExit(f"no cache {tag!r} for {split}: run python -m training.experiments.cache first")
            keep = [i for i, r in enumerate(rows) if r.get("motive")]
            xs.append(vec[keep])
            ys += [MOTIVE2ID[rows[i]["motive"]] for i in keep]
            y2s += [MOTIVE2ID.get(rows[i].get("motive_secondary") or "", -1) for i in keep]
            texts += [rows[i]["text"] for i in keep]
        out[part] = (np.concatenate(xs), np.array(ys), np.array(y2s), texts)
    return out


def class_weights(y: np.ndarray) -> np.ndarray:
    """inverse_sqrt, as training.data.motive_class_weights."""
    counts = np.bincount(y, minlength=K).astype(float)
    w = np.where(counts > 0, np.sqrt(counts.sum() / (K * np.maximum(counts, 1))), 1.0)
    return w / w[counts > 0].mean()


def linear_head(x: np.ndarray, y: np.ndarray, y2: np.ndarray, secondary: float = 0.0, epochs: int = 60,
                dropout: float = 0.1, samples: int = 1, lr: float = 2e-3, seed: int = 0, mlp: bool = False
                ) -> torch.nn.Module:
    """The product's motive head (a linear layer on the pooled vector) trained alone: weighted
    cross-entropy; `secondary` moves that much of the target onto the read secondary motive;
    `samples` > 1 is multi-sample dropout (the loss averaged over several dropout masks)."""
    torch.manual_seed(seed)
    d = x.shape[1]
    head = torch.nn.Sequential(torch.nn.Linear(d, 256), torch.nn.GELU(), torch.nn.Linear(256, K)) if mlp \
        else torch.nn.Linear(d, K)
    drop = torch.nn.Dropout(dropout)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    target = torch.nn.functional.one_hot(Y, K).float()
    has2 = torch.from_numpy(y2 >= 0)
    if secondary:
        t2 = torch.nn.functional.one_hot(torch.from_numpy(np.maximum(y2, 0)), K).float()
        target[has2] = (1 - secondary) * target[has2] + secondary * t2[has2]
    w = torch.from_numpy(class_weights(y)).float()[Y]
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(Y), generator=gen).split(64):
            losses = [-(target[idx] * torch.log_softmax(head(drop(X[idx])), -1)).sum(-1) for _ in range(samples)]
            loss = (torch.stack(losses).mean(0) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def logits_of(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(x)).numpy()


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def tfidf_logprobs(train_texts: list[str], y: np.ndarray, texts: list[str]) -> np.ndarray:
    from training.baselines import _logreg, _tfidf

    vec = _tfidf()
    lr = _logreg(0).fit(vec.fit_transform(train_texts), y)
    p = np.full((len(texts), K), 1e-9)
    p[:, lr.classes_] = lr.predict_proba(vec.transform(texts))
    return np.log(np.clip(p, 1e-9, 1))


def cross_fitted(choose, apply, n: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Probabilities for every validation post from a setting chosen on the other folds."""
    order = np.random.default_rng(seed).permutation(n)
    out = None
    for f in range(folds):
        test = order[f::folds]
        rest = np.setdiff1d(order, test)
        setting = choose(rest)
        p = apply(setting, test)
        out = np.zeros((n, p.shape[1])) if out is None else out
        out[test] = p
    return out


def score(y: np.ndarray, probs: np.ndarray) -> dict:
    m = motive_metrics(y, probs)
    # ECE after a temperature chosen on the other folds (how the product calibrates)
    logp = np.log(np.clip(probs, 1e-12, 1))

    def nll(idx):
        return lambda t: float(-np.mean(np.log(softmax(logp[idx] / t)[np.arange(len(idx)), y[idx]] + 1e-12)))

    calibrated = cross_fitted(lambda rest: fit_temperature(nll(rest)), lambda t, idx: softmax(logp[idx] / t), len(y))
    return {"macro_f1": round(m["macro_f1"], 4), "top2": round(m["top2_accuracy"], 4),
            "accuracy": round(m["accuracy"], 4), "ece_after_t": round(ece(y, calibrated)[0], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0002-20261130"))
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_head.json"))
    args = ap.parse_args()
    rows: list[dict] = []

    def record(name: str, probs: np.ndarray | list[np.ndarray], t0: float, y: np.ndarray, note: str = "") -> None:
        """One row; a list of probabilities (one per seed) gives the mean, and the spread in the note."""
        runs = [score(y, p) for p in (probs if isinstance(probs, list) else [probs])]
        mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
        if len(runs) > 1:
            sd = np.std([r["macro_f1"] for r in runs])
            note = (note + "; " if note else "") + f"mean of {len(runs)} seeds, macro-F1 sd {sd:.3f}"
        r = {"setting": name, **mean, "seconds": round(time.perf_counter() - t0, 1), "note": note}
        rows.append(r)
        print(json.dumps(r, ensure_ascii=False), flush=True)

    # ---- on the fine-tuned encoder's pooled vectors
    tag = args.bundle.name
    d = load(tag)
    xt, yt, y2t, tt = d["train"]
    xv, yv, _, tv = d["validation"]
    print(f"{tag}: {len(yt)} read training posts, {len(yv)} validation posts", flush=True)

    t0 = time.perf_counter()
    from sharelens.predictor import Predictor

    pred = Predictor.from_bundle(args.bundle)
    as_trained = pred.head_logits(xv).motive_logits
    record("as trained (joint fine-tune, v0002)", softmax(as_trained), t0, yv)

    heads = {}
    for name, kw in [("head refit: linear", {}),
                     ("head refit: linear, secondary as soft target 0.3", {"secondary": 0.3}),
                     ("head refit: linear, multi-sample dropout x4 (p 0.3)", {"samples": 4, "dropout": 0.3}),
                     ("head refit: MLP 256", {"mlp": True, "epochs": 30})]:
        t0 = time.perf_counter()
        seeds = [logits_of(linear_head(xt, yt, y2t, seed=seed, **kw), xv) for seed in range(SEEDS)]
        heads[name] = seeds[0]
        record(name, [softmax(z) for z in seeds], t0, yv)

    t0 = time.perf_counter()
    lr = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced").fit(xt, yt)
    record("head refit: sklearn LR balanced", lr.predict_proba(xv), t0, yv)

    t0 = time.perf_counter()
    tf = tfidf_logprobs(tt, yt, tv)
    record("TF-IDF + LR alone", np.exp(tf), t0, yv)
    grid = np.linspace(0, 1, 21)
    for name, nn_logits in [("as trained", as_trained), ("head refit: linear", heads["head refit: linear"])]:
        t0 = time.perf_counter()
        nn_logp = np.log(softmax(nn_logits))

        def mix(w, idx, nn_logp=nn_logp):
            return softmax(w * nn_logp[idx] + (1 - w) * tf[idx])

        def choose(rest, mix=mix):
            from sklearn.metrics import f1_score

            return max(grid, key=lambda w: f1_score(yv[rest], mix(w, rest).argmax(1), average="macro"))

        record(f"{name} + TF-IDF, log-linear mix (weight cross-fitted)", cross_fitted(choose, mix, len(yv)), t0, yv,
               note=f"weight on all validation: {choose(np.arange(len(yv))):.2f}")

    # prior correction (logit adjustment) of the as-trained head, tau cross-fitted
    t0 = time.perf_counter()
    prior = np.bincount(yt, minlength=K) / len(yt)

    def adjust(tau, idx):
        return softmax(as_trained[idx] - tau * np.log(prior))

    def choose_tau(rest):
        from sklearn.metrics import f1_score

        return max(np.linspace(0, 1.5, 16), key=lambda t: f1_score(yv[rest], adjust(t, rest).argmax(1), average="macro"))

    record("as trained, prior correction (tau cross-fitted)", cross_fitted(choose_tau, adjust, len(yv)), t0, yv)

    # ---- frozen base encoder: does e5's input prefix matter? does a contrastive step help?
    for base_tag, label in (("base", "no prefix"), ("base-query", "'query: ' prefix")):
        try:
            b = load(base_tag)
        except SystemExit as exc:
            print(exc)
            continue
        t0 = time.perf_counter()
        hs = [linear_head(b["train"][0], b["train"][1], b["train"][2], seed=seed) for seed in range(SEEDS)]
        record(f"frozen base e5, {label}: linear head", [softmax(logits_of(h, b["validation"][0])) for h in hs],
               t0, yv)
        if base_tag == "base":
            t0 = time.perf_counter()
            runs = []
            for seed in range(SEEDS):
                z_t, z_v = contrastive_projection(b["train"][0], b["train"][1], b["validation"][0], seed=seed)
                runs.append(softmax(logits_of(linear_head(z_t, b["train"][1], b["train"][2], seed=seed), z_v)))
            record("frozen base e5, no prefix: SetFit-style contrastive projection, then linear head", runs, t0, yv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}")


def contrastive_projection(x: np.ndarray, y: np.ndarray, xv: np.ndarray, epochs: int = 20, temp: float = 0.1,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SetFit's idea on frozen vectors: pull posts of the same motive together (supervised
    contrastive loss, Khosla et al. 2020) through a residual projection, before the head."""
    torch.manual_seed(seed)
    d = x.shape[1]
    proj = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d))
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-3)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)

    def embed(v):
        return torch.nn.functional.normalize(v + proj(v), dim=-1)

    for _ in range(epochs):
        for idx in torch.randperm(len(Y), generator=gen).split(256):
            z = embed(X[idx])
            sim = z @ z.T / temp
            eye = torch.eye(len(idx), dtype=torch.bool)
            sim = sim.masked_fill(eye, -1e9)
            pos = (Y[idx, None] == Y[None, idx]) & ~eye
            logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
            has = pos.any(1)
            loss = -((logp * pos).sum(1)[has] / pos.sum(1)[has]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return embed(X).numpy(), embed(torch.from_numpy(xv)).numpy()


if __name__ == "__main__":
    main()
