"""What every quick experiment shares: where the built corpus and caches are, and which posts."""

from __future__ import annotations

import json
from functools import cache

from sharelens.paths import BASE_ENCODER_ZH_DIR as ENCODER
from sharelens.paths import EXPERIMENTS_CACHE as CACHE
from sharelens.paths import JSONL_DIR as JSONL

__all__ = ["CACHE", "ENCODER", "JSONL", "EXPERIMENT_SPLITS", "TIER_DOMAINS", "TRAIN_SPLITS", "VALIDATION_SPLITS",
           "experiment_rows", "read"]

# the default profile's training splits, and the validation splits experiments are read on
TRAIN_SPLITS = ("train", "ordinary_train", "aux_cctv", "aux_ced", "aux_spam")
VALIDATION_SPLITS = ("validation", "ordinary_validation")
EXPERIMENT_SPLITS = TRAIN_SPLITS + VALIDATION_SPLITS
TIER_DOMAINS = {"feed", "ordinary"}  # = training.data.TIER_TRAINED_DOMAINS


@cache
def read(split: str) -> tuple[dict, ...]:
    with (JSONL / f"{split}.jsonl").open(encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh)


def experiment_rows(split: str) -> list[dict]:
    """The posts a head learns from (motive-annotated or tier-trained), as `training.data` keeps them;
    every post of a validation split."""
    rows = read(split)
    if split in VALIDATION_SPLITS:
        return list(rows)
    return [r for r in rows if r.get("motive") or r["domain"] in TIER_DOMAINS]
