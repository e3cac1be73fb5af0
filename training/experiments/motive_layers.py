"""Does the motive head gain from the encoder's intermediate layers (issue 11)?

    python -m training.experiments.motive_layers --cache [--bundle models/sharelens/v0008-20261201]   # ~3 min
    python -m training.experiments.motive_layers [--bundle models/sharelens/v0008-20261201]

The head reads the mean-pooled last layer today. Lower layers of a small encoder keep more of the
surface (words, punctuation, emoji) that a motive often hangs on; a head over several layers' pools
costs no extra forward pass in serving. `--cache` stores the masked mean of layers 3, 6, 9 and 12 of
the bundle's fine-tuned encoder for the experiment posts (`data/build/experiments/<tag>-layers_*`);
then the product's refit (`training.motive_refit._fit_one`: 60 epochs, multi-sample dropout, inverse
square-root class weights) is fitted on each layer set, three seeds each, and read on both validation
populations. No test split is read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sharelens.labels import MOTIVE2ID
from training.data import motive_class_weights
from training.experiments.cache import cached, store
from training.experiments.common import EXPERIMENT_SPLITS, TRAIN_SPLITS, VALIDATION_SPLITS, experiment_rows
from training.experiments.motive_forward import load
from training.experiments.motive_ordinary import scores
from training.motive_refit import _fit_one

LAYERS = (3, 6, 9, 12)
SETS = {"12 (as shipped)": (12,), "9": (9,), "6": (6,), "9 + 12": (9, 12), "6 + 12": (6, 12),
        "3 + 6 + 9 + 12": (3, 6, 9, 12), "mean of 9 and 12": "mean912"}


def hidden_states(encoder, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The embeddings' output and every layer's, for transformers' BERT and `sharelens.lean_bert`'s."""
    from sharelens.lean_bert import LeanBertModel

    if isinstance(encoder, LeanBertModel):  # no output_hidden_states: run its layers one by one
        x = encoder.embeddings(encoder.embeddings.word_embeddings(ids))
        key_mask = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        states = [x]
        for layer in encoder.encoder.layer:
            x = layer(x, key_mask)
            states.append(x)
        return states
    return list(encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states)


@torch.inference_mode()
def layer_vectors(bundle: Path, texts: list[str], batch_size: int = 32) -> np.ndarray:
    from sharelens.predictor import Predictor
    from sharelens.text import normalise

    pred = Predictor.from_bundle(bundle)
    seqs, _ = pred.tokenize([normalise(t).text for t in texts])
    hidden = pred.model.encoder.config.hidden_size
    out = np.zeros((len(texts), len(LAYERS), hidden), np.float32)
    order = np.argsort([-len(x) for x in seqs], kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pred._pad([seqs[i] for i in idx])
        states = hidden_states(pred.model.encoder, ids, mask)
        m = mask.unsqueeze(-1).float()
        out[idx] = np.stack([((states[k] * m).sum(1) / m.sum(1)).numpy() for k in LAYERS], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_layers.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = f"{args.bundle.name}-layers"
    if args.cache:
        for split in EXPERIMENT_SPLITS:
            rows = experiment_rows(split)
            if cached(tag, split, rows) is None:
                t0 = time.perf_counter()
                store(tag, split, rows, layer_vectors(args.bundle, [r["text"] for r in rows]), time.perf_counter() - t0)
                print(f"{tag} {split}: {len(rows)} posts in {time.perf_counter() - t0:.0f} s", flush=True)
        return

    train = {s: load(tag, s) for s in TRAIN_SPLITS}
    val = {s: load(tag, s) for s in VALIDATION_SPLITS}
    y = torch.tensor([MOTIVE2ID[r["motive"]] for s in TRAIN_SPLITS for r in train[s][0]])
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))

    def pick(x: np.ndarray, which) -> np.ndarray:
        if which == "mean912":
            return x[:, [LAYERS.index(9), LAYERS.index(12)]].mean(1)
        return x[:, [LAYERS.index(k) for k in which]].reshape(len(x), -1)

    results = []
    for name, which in SETS.items():
        z = torch.from_numpy(np.concatenate([pick(train[s][1], which) for s in TRAIN_SPLITS]))
        runs = []
        for seed in range(3):
            t0 = time.perf_counter()
            head = _fit_one(z.shape[1], z, y, weight, 60, seed)
            row = {"seconds": round(time.perf_counter() - t0, 1)}
            for s in VALIDATION_SPLITS:
                with torch.no_grad():
                    probs = torch.softmax(head(torch.from_numpy(pick(val[s][1], which))), -1).numpy()
                got = scores(probs, np.array([MOTIVE2ID[r["motive"]] for r in val[s][0]]))
                row.update({f"{s}_macro_f1": got["macro_f1"], f"{s}_top2": got["top2"]})
            row["mean_macro_f1"] = float(np.mean([row[f"{s}_macro_f1"] for s in VALIDATION_SPLITS]))
            runs.append(row)
        summary = {"layers": name, "dims": z.shape[1],
                   **{k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]},
                   "mean_macro_f1_sd": round(float(np.std([r["mean_macro_f1"] for r in runs])), 4)}
        print(json.dumps(summary), flush=True)
        results.append(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
