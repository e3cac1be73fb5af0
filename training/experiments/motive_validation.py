"""A bundle's motive head on both read validation populations, measured as the motive refit's keep rule
measures it (`training.motive_refit`): macro-F1 of the served head's argmax on the frozen encoder's
pooled vectors, per split and their mean. Used to compare bundles for production (issue 11).

    python -m training.experiments.motive_validation models/sharelens/v0007-20261201 [more bundles]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sharelens.bundle import load_model, verify_bundle
from sharelens.labels import MOTIVE2ID
from training.data import load_corpus
from training.motive_refit import _macro_f1
from training.tier_refit import pooled_vectors

SPLITS = ("validation", "ordinary_validation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/build/corpus"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    corpus = load_corpus(args.data)
    for bundle in args.bundles:
        info = verify_bundle(bundle)
        model, tokenizer = load_model(info, runtime="transformers")
        scores = {}
        for split in SPLITS:
            rows = [r for r in corpus[split] if r["motive"]]
            z = pooled_vectors(model, tokenizer, [r["text"] for r in rows], info.max_length)
            scores[split] = _macro_f1(model.motive_head, z, np.array([MOTIVE2ID[r["motive"]] for r in rows]))
        each = ", ".join(f"{s} {v:.3f}" for s, v in scores.items())
        print(f"{bundle}: motive macro-F1 {each}; mean {np.mean(list(scores.values())):.3f}", flush=True)


if __name__ == "__main__":
    main()
