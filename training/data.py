"""From the built corpus to tokenised training and validation sets with masked labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from sharelens.context_features import ContextFeatures, observed_age_days
from sharelens.errors import SharelensError
from sharelens.labels import MOTIVE2ID, MOTIVES, TIER2ID
from sharelens.modeling import IGNORE
from sharelens.post import Context
from training.config import TrainConfig

# Feed crawls and ordinary accounts; CCTV and CED tiers measure other populations (one giant account,
# a capped 2012 crawl) and the spam crawl's counts are the reposts' own (see training/corpus/splits.py).
# The committed test sample (one account's posts, data/sample) trains its tier head too: the tiny model
# learns from it in `make test`, and nothing is claimed from its figures.
TIER_TRAINED_DOMAINS = {"feed", "ordinary", "sample"}


def record_context_ids(features: ContextFeatures, row: dict, with_age: bool = True) -> list[int]:
    """A corpus record's context categories; the observed age (right-censoring) when asked."""
    age = observed_age_days(row.get("posted_at"), row.get("observed_at")) if with_age else None
    return features.encode(Context.from_record(row), age)


def fit_context_features(cfg: TrainConfig) -> ContextFeatures:
    """The channel vocabulary of the tier-trained posts of the training splits."""
    corpus = load_corpus(cfg.data_dir)
    rows = [r for s in cfg.train_splits if s in corpus for r in corpus[s].select_columns(
        [c for c in ("channel", "domain") if c in corpus[s].column_names]) if r["domain"] in TIER_TRAINED_DOMAINS]
    return ContextFeatures.fit(rows, min_count=cfg.channel_min_count)


def load_corpus(data_dir: str | Path):
    import datasets

    path = Path(data_dir)
    if not (path / "dataset_dict.json").exists():
        raise SharelensError("E303", f"no built corpus at {path}; run `make data` first")
    return datasets.load_from_disk(str(path))


def with_labels(ds):
    def label(row: dict) -> dict:
        return {
            "motive_label": MOTIVE2ID[row["motive"]] if row["motive"] else IGNORE,
            "tier_label": TIER2ID[row["tier"]] if row["domain"] in TIER_TRAINED_DOMAINS else IGNORE,
        }

    return ds.map(label, desc="labels")


def training_sets(cfg: TrainConfig, tokenizer, features: ContextFeatures | None = None):
    """(train, validation) datasets with input_ids, attention_mask, motive_label, tier_label and,
    given context features, context_ids."""
    import datasets

    corpus = load_corpus(cfg.data_dir)
    missing = [s for s in [*cfg.train_splits, cfg.validation_split] if s not in corpus]
    if missing:
        raise SharelensError("E304", f"corpus has no split(s) {missing}; rebuild it with `make data`")
    parts = []
    for split in cfg.train_splits:
        ds = with_labels(corpus[split])
        # aux splits contribute only their motive-annotated posts
        ds = ds.filter(lambda r: r["motive_label"] != IGNORE or r["tier_label"] != IGNORE, desc=f"keep {split}")
        parts.append(ds)
    train = datasets.concatenate_datasets(parts)
    if cfg.max_train_posts is not None and len(train) > cfg.max_train_posts:
        train = train.shuffle(seed=cfg.seed).select(range(cfg.max_train_posts))
    annotated = train.filter(lambda r: r["motive_label"] != IGNORE, desc="annotated")
    if cfg.motive_oversample > 1 and len(annotated):
        train = datasets.concatenate_datasets([train] + [annotated] * (cfg.motive_oversample - 1))
    validation = with_labels(corpus[cfg.validation_split])

    def tok(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=cfg.max_length)

    keep = ["input_ids", "attention_mask", "motive_label", "tier_label", "context_ids"]
    train = train.map(tok, batched=True, desc="tokenise train")
    validation = validation.map(tok, batched=True, desc="tokenise validation")
    if features is not None:
        def ctx(row: dict) -> dict:
            return {"context_ids": record_context_ids(features, row, cfg.observed_age)}

        def ctx_as_served(row: dict) -> dict:  # model selection sees what the API will see: no observed age
            return {"context_ids": record_context_ids(features, row, with_age=False)}

        train = train.map(ctx, desc="context train")
        validation = validation.map(ctx_as_served, desc="context validation")
    train = train.remove_columns([c for c in train.column_names if c not in keep])
    validation = validation.remove_columns([c for c in validation.column_names if c not in keep])
    return train, validation


def motive_class_weights(train, scheme: str) -> np.ndarray:
    counts = Counter(int(x) for x in train["motive_label"] if x != IGNORE)
    w = np.ones(len(MOTIVES), dtype=np.float32)
    if scheme == "none" or not counts:
        return w
    if scheme != "inverse_sqrt":
        raise SharelensError("E305", f"unknown motive_class_weighting {scheme!r}: use inverse_sqrt or none")
    total = sum(counts.values())
    for i in range(len(MOTIVES)):
        if counts.get(i):
            w[i] = (total / (len(MOTIVES) * counts[i])) ** 0.5
    present = [i for i in range(len(MOTIVES)) if counts.get(i)]
    w[present] /= w[present].mean()
    return w
