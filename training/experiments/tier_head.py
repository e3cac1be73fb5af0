"""Tier-head ablations on cached, frozen encoder embeddings: minutes instead of an hour per row.

    python -m training.experiments.tier_head

Mean-pooled multilingual-e5-small vectors of the tier-trained posts are computed once (cached in
data/build/experiments/), then the product's own tier head (`ContextFusion` + the CORAL projection)
is trained on them under each setting, two seeds each. Every figure is read on the validation splits
(feed `validation`, `ordinary_validation`), never on a test split. The full model fine-tunes the
encoder, so absolute figures differ; the comparison between rows is what these runs are for.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score, f1_score

from sharelens.context_features import ContextFeatures, observed_age_days
from sharelens.labels import TIERS
from sharelens.modeling import ContextFusion, median_tier, tier_probs_from_logits
from sharelens.paths import BASE_ENCODER_ZH_DIR as ENCODER  # noqa: E402
from sharelens.paths import EXPERIMENTS_CACHE as CACHE  # noqa: E402
from sharelens.paths import JSONL_DIR as JSONL  # noqa: E402
from sharelens.post import Context

SPLITS = ("train", "validation", "ordinary_train", "ordinary_validation")


def read(split: str) -> list[dict]:
    with (JSONL / f"{split}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def embeddings(split: str, rows: list[dict]) -> np.ndarray:
    path = CACHE / f"emb_{split}.npy"
    if path.exists():
        return np.load(path)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ENCODER)
    enc = AutoModel.from_pretrained(ENCODER, add_pooling_layer=False).eval()
    texts = [r["text"] for r in rows]
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), enc.config.hidden_size), np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            idx = order[i:i + 64]
            batch = tok([texts[j] for j in idx], truncation=True, max_length=128, padding=True, return_tensors="pt")
            h = enc(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            out[idx] = ((h * m).sum(1) / m.sum(1)).numpy()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def context_ids(features: ContextFeatures, rows: list[dict], with_age: bool, drop: tuple[str, ...] = ()) -> torch.Tensor:
    return torch.tensor([features.encode(Context.from_record(r).without(*drop),
                                         observed_age_days(r.get("posted_at"), r.get("observed_at")) if with_age else None)
                         for r in rows])


def labels(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([TIERS.index(r["tier"]) for r in rows])


def run(data: dict, context: bool = True, age: bool = True, young_weight: float | None = None,
        ordinary: bool = True, seed: int = 0, epochs: int = 60) -> dict[str, tuple[float, float] | None]:
    torch.manual_seed(seed)
    (tr_f, e_f), (tr_o, e_o) = data["train"], data["ordinary_train"]
    rows = tr_f + (tr_o if ordinary else [])
    x = torch.from_numpy(np.concatenate([e_f] + ([e_o] if ordinary else [])))
    y = labels(rows)
    features = data["features"]
    c = context_ids(features, rows, age)
    w = torch.ones(len(rows))
    if young_weight is not None:  # posts younger than 3 days weigh less (their counts are incomplete)
        ages = [observed_age_days(r.get("posted_at"), r.get("observed_at")) for r in rows]
        w = torch.tensor([1.0 if a is None else min(1.0, max(young_weight, a / 3)) for a in ages])
    proj = torch.nn.Linear(x.shape[1], 1, bias=False)
    bias = torch.nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))
    fuse = ContextFusion(x.shape[1], features.sizes()) if context else None
    params = [*proj.parameters(), bias, *(fuse.parameters() if fuse else [])]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    levels = torch.arange(len(TIERS) - 1)
    for _ in range(epochs):
        perm = torch.randperm(len(rows))
        for i in range(0, len(rows), 64):
            b = perm[i:i + 64]
            z = torch.nn.functional.dropout(x[b], 0.1)
            logit = proj(z) + (fuse.train()(z, c[b]) if fuse else 0) + bias
            target = (y[b].unsqueeze(1) > levels).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="none").mean(1)
            opt.zero_grad()
            (loss * w[b]).mean().backward()
            opt.step()

    def score(split: str, with_age: bool, drop: tuple[str, ...] = ()) -> tuple[float, float]:
        rows_, emb = data[split]
        with torch.no_grad():
            z = torch.from_numpy(emb)
            logit = proj(z) + (fuse.eval()(z, context_ids(features, rows_, with_age, drop)) if fuse else 0) + bias
            pred = median_tier(tier_probs_from_logits(logit).numpy())
        truth = labels(rows_).numpy()
        return (float(cohen_kappa_score(truth, pred, weights="quadratic")),
                float(f1_score(truth, pred, average="macro")))

    return {"feed full": score("validation", False), "feed +age": score("validation", True) if age else None,
            "feed text only": score("validation", False, Context.field_names()),
            "ordinary full": score("ordinary_validation", False)}


SETTINGS = {
    "text only head": {"context": False, "age": False},
    "context, no age": {"context": True, "age": False},
    "context + age (chosen)": {"context": True, "age": True},
    "context, young down-weighted": {"context": True, "age": False, "young_weight": 0.3},
    "context + age, feed only": {"context": True, "age": True, "ordinary": False},
}


def main() -> None:
    torch.set_num_threads(2)
    data: dict = {}
    for split in SPLITS:
        rows = read(split)
        data[split] = (rows, embeddings(split, rows))
    data["features"] = ContextFeatures.fit(data["train"][0] + data["ordinary_train"][0], 3)
    print("setting | feed QWK / macro-F1 (full context) | feed + age | feed text only | ordinary full")
    for name, kw in SETTINGS.items():
        runs = [run(data, seed=s, **kw) for s in (0, 1)]
        cells = []
        for key in runs[0]:
            vals = [r[key] for r in runs if r[key] is not None]
            cells.append("-" if not vals else "{:.3f} / {:.3f}".format(*np.mean(vals, axis=0)))
        print(f"{name} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
