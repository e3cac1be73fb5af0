"""Typed training configuration. One YAML file per profile in training/configs/; any field can be
overridden on the command line (`make train PROFILE=fast ARGS="--epochs 2"`). The resolved config
is saved beside the model."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sharelens.errors import SharelensError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    name: str = field(default="sharelens", metadata={"help": "model name: bundles go to models/<name>/<version>/"})
    profile: str = field(default="default", metadata={"help": "profile this config came from"})
    base_encoder: str = field(
        default="models/base/multilingual-e5-small-zh",
        metadata={"help": "BERT-family encoder: a local folder, a hub id (needs a network), or 'builtin:tiny' "
                  "(a random tiny BERT with a character vocabulary, for tests)"})
    keep_layers: int | None = field(default=None, metadata={"help": "keep only the first k encoder layers"})
    freeze_embeddings: bool = field(
        default=True, metadata={"help": "freeze the word-embedding matrix (250k x 384 for e5: most parameters, "
                                "little gain from 3k posts, and AdamW over it dominates a CPU step)"})
    max_length: int = field(default=128, metadata={"help": "tokens per post (feed previews are <= ~150 chars)"})
    epochs: float = field(default=6.0, metadata={"help": "maximum epochs (early stopping may end sooner)"})
    batch_size: int = field(default=16, metadata={"help": "per-device training batch size"})
    eval_batch_size: int = field(default=64, metadata={"help": "per-device evaluation batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate of the encoder"})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "learning rate of the two heads"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "linear warm-up share of all steps"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the heads"})
    layerwise_lr_decay: float = field(
        default=1.0, metadata={"help": "layer-wise learning-rate decay: layer k of L learns at "
                               "learning_rate * decay**(L-k), the embeddings at decay**(L+1); 1.0: off"})
    rdrop_alpha: float = field(
        default=0.0, metadata={"help": "R-Drop: two dropout passes per batch, both losses plus alpha times the "
                               "symmetric KL between their motive distributions (Liang et al. 2021); 0: off"})
    motive_loss_weight: float = field(default=1.0, metadata={"help": "weight of the motive loss"})
    tier_loss_weight: float = field(default=1.0, metadata={"help": "weight of the ordinal tier loss"})
    motive_class_weighting: str = field(
        default="inverse_sqrt", metadata={"help": "motive class weights: inverse_sqrt (of frequency) or none"})
    context: bool = field(
        default=True, metadata={"help": "fuse the post's context (channel, vip, verified, followers, time, author "
                                "history) into the tier head; false: a text-only tier head"})
    channel_min_count: int = field(
        default=3, metadata={"help": "channels seen fewer times in the training posts are unknown to the model"})
    observed_age: bool = field(
        default=True, metadata={"help": "give the tier head the post's age when its counts were snapshotted "
                                "(right-censoring); serving leaves it unknown"})
    motive_refit_epochs: int = field(
        default=60, metadata={"help": "after fine-tuning, refit the motive head alone on the frozen encoder for this "
                              "many epochs (multi-sample dropout); kept only if validation macro-F1 does not drop "
                              "(training/motive_refit.py); 0: off"})
    motive_refit_seeds: int = field(
        default=5, metadata={"help": "the refit motive head is the mean of this many heads, one per seed (seed, "
                             "seed + 1, ...): one head's validation figure swings with its seed; linear heads "
                             "average into one, so serving costs the same"})
    motive_validation_splits: list[str] = field(
        default_factory=lambda: ["validation", "ordinary_validation"],
        metadata={"help": "with validation_split, the splits whose read posts decide whether the refit motive head "
                  "replaces the fine-tuned one: the mean of their macro-F1s, each population once (the feed and the "
                  "ordinary accounts); splits missing or without read posts are skipped"})
    tier_head_epochs: int = field(
        default=30, metadata={"help": "after fine-tuning, fit the tier head alone on the frozen encoder for this many "
                              "epochs: checked forward in time on the recent splits, then refit with them "
                              "(training/tier_refit.py); 0: keep the jointly trained tier head"})
    tier_recent_splits: list[str] = field(
        default_factory=lambda: ["validation", "ordinary_validation"],
        metadata={"help": "the most recent tier-labelled splits: the tier head is trained on their earlier half "
                  "and read on their later half (the forward check, where its temperature is fitted), then "
                  "refit on the training splits plus all of them"})
    motive_oversample: int = field(
        default=2, metadata={"help": "repeat each motive-annotated post this many times per epoch (they are a "
                             "minority of the tier-labelled posts)"})
    time_budget_minutes: float | None = field(
        default=None, metadata={"help": "stop after this much training time (at the next step; the best "
                                "checkpoint so far is kept), e.g. to fit a shared machine's schedule"})
    early_stopping_patience: int = field(default=2, metadata={"help": "evaluations without improvement before stop"})
    seed: int = field(default=42, metadata={"help": "random seed (data order, dropout, head init)"})
    data_dir: str = field(default="data/build/corpus", metadata={"help": "the corpus built by `make data`"})
    train_splits: list[str] = field(default_factory=lambda: ["train", "ordinary_train", "aux_cctv", "aux_ced", "aux_spam"],
                                    metadata={"help": "splits to train on (aux_* contribute motive labels only, "
                                              "ordinary_train tier labels only)"})
    validation_split: str = field(default="validation", metadata={"help": "split for early stopping and calibration"})
    max_train_posts: int | None = field(default=None, metadata={"help": "cap on training posts (tiny profile)"})
    logging_steps: int = field(default=20, metadata={"help": "log every N optimiser steps"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: all cores)"})

    def __post_init__(self) -> None:
        # checked when the config is read, not after an hour of fine-tuning
        if self.motive_refit_seeds < 1:
            raise SharelensError("E325", f"motive_refit_seeds is {self.motive_refit_seeds}: the motive refit needs "
                                 "at least one seed")

    @classmethod
    def load(cls, profile_or_path: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        path = Path(profile_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{profile_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise SharelensError("E301", f"no training config {profile_or_path!r}; profiles: {known}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - valid)
        if unknown:
            raise SharelensError("E302", f"{path.name}: unknown config keys {unknown}")
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per config field, with the field's help text."""
    for f in fields(TrainConfig):
        if f.name == "profile":  # chosen by --profile itself
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
        flag = "--" + f.name.replace("_", "-")
        if "bool" in kind:
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                                help=f.metadata.get("help"))
        elif "list" in kind:
            parser.add_argument(flag, nargs="+", default=None, help=f.metadata.get("help"))
        elif "int" in kind:
            parser.add_argument(flag, type=int, default=None, help=f.metadata.get("help"))
        elif "float" in kind:
            parser.add_argument(flag, type=float, default=None, help=f.metadata.get("help"))
        else:
            parser.add_argument(flag, default=None, help=f.metadata.get("help"))
