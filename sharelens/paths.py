"""Every path of the repository in one place: the data pipeline, training, evaluation, serving and the
benchmarks import them from here (and only from here), so that no module imports another just to
learn where something lives (the old training.train <-> training.evaluate cycle).

`SHARELENS_MODELS_DIR` and `SHARELENS_RAW_DIR` override the models folder and the raw mirror.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# data/: what is committed (pinned sources, fixed splits, annotations, the openly licensed sample)
DATA_DIR = REPO_ROOT / "data"
SOURCES_MANIFEST = DATA_DIR / "sources.json"
SPLIT_FILE = DATA_DIR / "splits" / "splits.tsv"
ANNOTATIONS = DATA_DIR / "annotations" / "motives.csv"
WEAK_LABELS = DATA_DIR / "annotations" / "weak_motives.csv"
AGREEMENT = DATA_DIR / "annotations" / "agreement.json"
SAMPLE_DIR = DATA_DIR / "sample"

# data/build/: what `make data` writes (never committed)
BUILD_DIR = DATA_DIR / "build"
CORPUS_DIR = BUILD_DIR / "corpus"
JSONL_DIR = BUILD_DIR / "jsonl"
EXPERIMENTS_CACHE = BUILD_DIR / "experiments"
SAMPLE_BUILD_DIR = DATA_DIR / "build-sample"

# models/: the base encoders `make encoder` materialises (the registry's folder: MODELS_DIR, below)
BASE_ENCODER_DIR = REPO_ROOT / "models" / "base" / "multilingual-e5-small"
BASE_ENCODER_ZH_DIR = REPO_ROOT / "models" / "base" / "multilingual-e5-small-zh"

# the held-out posts the benchmarks send (labels are never read)
BENCH_POSTS = JSONL_DIR / "test.jsonl"


def models_dir() -> Path:
    """The models folder as the environment says now (MODELS_DIR is read once, at import)."""
    return Path(os.environ.get("SHARELENS_MODELS_DIR", REPO_ROOT / "models"))


MODELS_DIR = models_dir()  # the registry and its bundles, as the environment said at import


def default_raw_dir() -> Path | None:
    """The local mirror of the raw sources: $SHARELENS_RAW_DIR, else ../shared/data/raw beside the
    checkout, else None (then `make data` needs FETCH=1, and the mirror-based tests skip)."""
    env = os.environ.get("SHARELENS_RAW_DIR")
    if env:
        return Path(env)
    guess = REPO_ROOT.parent / "shared" / "data" / "raw"
    return guess if guess.is_dir() else None


def resolve_path(p: str) -> str:
    """Relative local paths are relative to the repo; anything else (a hub id) is left alone."""
    if p.startswith("builtin:"):
        return p
    cand = REPO_ROOT / p
    return str(cand) if (cand.exists() or p.startswith(("models/", "data/", "./"))) else p
