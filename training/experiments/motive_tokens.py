"""Does a learned attention pooling over the tokens lift the motive head (issue 11)?

    python -m training.experiments.motive_tokens --cache [--bundle models/sharelens/v0008-20261201]   # ~3 min
    python -m training.experiments.motive_tokens [--bundle models/sharelens/v0008-20261201]

The motive head reads the masked mean of the last layer, which weighs every token alike; a motive
often hangs on a few (抽奖, 求助, 打卡, a hashtag). `--cache` stores the bundle's fine-tuned encoder's
last-layer token states of the read posts (float16, padded, with lengths) in
`data/build/experiments/<tag>-tokens_<split>.npz`. Then, on the same read posts as the product's
refit, three heads with the product's recipe (multi-sample dropout 4 x 0.3, inverse square-root class
weights, AdamW 2e-3, batches of 64, 60 epochs), three seeds each, read on both validation
populations: a linear head on the mean (what ships, refitted here by the same loop), a linear head on
an attention pool (one learned query), and on both concatenated. No test split is read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sharelens.labels import MOTIVE2ID, MOTIVES
from training.data import motive_class_weights
from training.experiments.cache import fingerprint
from training.experiments.common import CACHE, TRAIN_SPLITS, VALIDATION_SPLITS, experiment_rows
from training.experiments.motive_ordinary import scores


def read_rows(split: str) -> list[dict]:
    return [r for r in experiment_rows(split) if r.get("motive")]


@torch.inference_mode()
def cache_tokens(bundle: Path, tag: str) -> None:
    from sharelens.predictor import Predictor
    from sharelens.text import normalise

    pred = Predictor.from_bundle(bundle)
    for split in (*TRAIN_SPLITS, *VALIDATION_SPLITS):
        rows = read_rows(split)
        path = CACHE / f"{tag}_{split}.npz"
        if path.exists() and str(np.load(path)["fingerprint"]) == fingerprint(rows):
            continue
        t0 = time.perf_counter()
        seqs, _ = pred.tokenize([normalise(r["text"]).text for r in rows])
        width = max(len(s) for s in seqs)
        states = np.zeros((len(rows), width, pred.model.encoder.config.hidden_size), np.float16)
        lengths = np.array([len(s) for s in seqs])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(rows), 32):
            idx = order[start:start + 32]
            ids, mask = pred._pad([seqs[i] for i in idx])
            h = pred.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            states[idx, :h.shape[1]] = h.numpy().astype(np.float16)
        np.savez(path, states=states, lengths=lengths, fingerprint=fingerprint(rows))
        print(f"{tag} {split}: {len(rows)} posts in {time.perf_counter() - t0:.0f} s", flush=True)


class PoolHead(torch.nn.Module):
    def __init__(self, hidden: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.query = torch.nn.Linear(hidden, 1)
        self.out = torch.nn.Linear(hidden * (2 if mode == "both" else 1), len(MOTIVES))

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1)
        if self.mode == "mean":
            return mean
        a = torch.softmax(self.query(h).squeeze(-1).masked_fill(~mask, float("-inf")), -1)
        att = (a.unsqueeze(-1) * h).sum(1)
        return att if self.mode == "attention" else torch.cat([mean, att], -1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        return self.out(torch.nn.functional.dropout(self.pool(h, mask), dropout, self.training))


def fit(mode: str, h: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, epochs: int,
        seed: int) -> PoolHead:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = PoolHead(h.shape[-1], mode)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=0.01)
    w = weight[y]
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            width = int(mask[idx].sum(1).max())
            hb, mb = h[idx, :width].float(), mask[idx, :width]
            pooled = head.pool(hb, mb)
            losses = [torch.nn.functional.cross_entropy(head.out(torch.nn.functional.dropout(pooled, 0.3)), y[idx],
                                                        reduction="none") for _ in range(4)]
            loss = (torch.stack(losses).mean(0) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/sharelens/v0008-20261201"))
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("data/build/experiments/motive_tokens.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tag = f"{args.bundle.name}-tokens"
    if args.cache:
        cache_tokens(args.bundle, tag)
        return

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        got = np.load(CACHE / f"{tag}_{split}.npz")
        rows = read_rows(split)
        if str(got["fingerprint"]) != fingerprint(rows):
            raise SystemExit(f"stale token cache for {split}: run with --cache")
        lengths = torch.from_numpy(got["lengths"])
        states = torch.from_numpy(got["states"])
        mask = torch.arange(states.shape[1])[None, :] < lengths[:, None]
        return states, mask, np.array([MOTIVE2ID[r["motive"]] for r in rows])

    parts = [load(s) for s in TRAIN_SPLITS]
    width = max(p[0].shape[1] for p in parts)
    h = torch.cat([torch.nn.functional.pad(p[0], (0, 0, 0, width - p[0].shape[1])) for p in parts])
    mask = torch.cat([torch.nn.functional.pad(p[1], (0, width - p[1].shape[1])) for p in parts])
    y = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, "inverse_sqrt"))
    val = {s: load(s) for s in VALIDATION_SPLITS}
    results = []
    for mode in ("mean", "attention", "both"):
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            head = fit(mode, h, mask, y, weight, args.epochs, seed)
            row = {"seconds": time.perf_counter() - t0}
            for s, (hv, mv, yv) in val.items():
                with torch.no_grad():
                    probs = torch.softmax(head(hv.float(), mv), -1).numpy()
                got = scores(probs, yv)
                row.update({f"{s}_macro_f1": got["macro_f1"], f"{s}_top2": got["top2"]})
            row["mean_macro_f1"] = float(np.mean([row[f"{s}_macro_f1"] for s in VALIDATION_SPLITS]))
            print(mode, seed, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
            runs.append(row)
        summary = {"pooling": mode, **{k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]},
                   "mean_macro_f1_sd": round(float(np.std([r["mean_macro_f1"] for r in runs])), 4)}
        print(json.dumps(summary), flush=True)
        results.append(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
