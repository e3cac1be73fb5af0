"""Cached vectors for quick experiments: encode once, try many heads in seconds.

    python -m training.experiments.cache --bundle models/sharelens/v0002-20261130   # fine-tuned pooled vectors
    python -m training.experiments.cache --base --prefix "query: "                  # frozen base e5, with a prefix

The posts are the experiment posts of `training.experiments.common.experiment_rows` (everything a
head is trained on, plus the validation splits); test splits are never cached here. Vectors go to
data/build/experiments/<tag>_<split>.npy, in the row order of the split's JSONL file filtered the
same way, so a cache is reused as long as the corpus is unchanged (its fingerprint is checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from training.experiments.common import CACHE, ENCODER, EXPERIMENT_SPLITS, experiment_rows


def fingerprint(rows: list[dict]) -> str:
    return hashlib.sha256("\n".join(r["post_id"] + r["text"] for r in rows).encode()).hexdigest()[:16]


def cached(tag: str, split: str, rows: list[dict]) -> np.ndarray | None:
    path, meta = CACHE / f"{tag}_{split}.npy", CACHE / f"{tag}_{split}.json"
    if path.exists() and meta.exists() and json.loads(meta.read_text())["fingerprint"] == fingerprint(rows):
        return np.load(path)
    return None


def store(tag: str, split: str, rows: list[dict], vectors: np.ndarray, seconds: float) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(CACHE / f"{tag}_{split}.npy", vectors)
    (CACHE / f"{tag}_{split}.json").write_text(json.dumps(
        {"fingerprint": fingerprint(rows), "posts": len(rows), "seconds": round(seconds, 1)}))


def bundle_vectors(bundle: Path, texts: list[str]) -> np.ndarray:
    from sharelens.predictor import Predictor
    from sharelens.text import normalise

    pred = Predictor.from_bundle(bundle)
    return pred.pooled([normalise(t).text for t in texts], batch_size=32)


@torch.inference_mode()
def base_vectors(texts: list[str], prefix: str, max_length: int = 112) -> np.ndarray:
    """Frozen base encoder, e5's own pooling (masked mean), optional e5 input prefix."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ENCODER)
    enc = AutoModel.from_pretrained(ENCODER, add_pooling_layer=False).eval()
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), enc.config.hidden_size), np.float32)
    for i in range(0, len(texts), 64):
        idx = order[i:i + 64]
        batch = tok([prefix + texts[j] for j in idx], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt")
        h = enc(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        out[idx] = ((h * m).sum(1) / m.sum(1)).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle folder: cache its fine-tuned pooled vectors")
    ap.add_argument("--base", action="store_true", help="cache the frozen base encoder's vectors")
    ap.add_argument("--prefix", default="", help="e5 input prefix for --base ('query: ', 'passage: ' or none)")
    ap.add_argument("--tag", help="cache name (default: the bundle's version, or base/base-query/...)")
    args = ap.parse_args()
    if bool(args.bundle) == args.base:
        ap.error("give exactly one of --bundle or --base")
    tag = args.tag or (args.bundle.name if args.bundle else "base" + (f"-{args.prefix.strip(': ')}" if args.prefix else ""))
    for split in EXPERIMENT_SPLITS:
        rows = experiment_rows(split)
        if cached(tag, split, rows) is not None:
            print(f"{tag} {split}: cached ({len(rows)} posts)")
            continue
        t0 = time.perf_counter()
        texts = [r["text"] for r in rows]
        vec = bundle_vectors(args.bundle, texts) if args.bundle else base_vectors(texts, args.prefix)
        store(tag, split, rows, vec, time.perf_counter() - t0)
        print(f"{tag} {split}: {len(rows)} posts in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
