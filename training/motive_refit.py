"""Second stage of training for the motive head: refit it alone on the fine-tuned encoder's frozen
pooled vectors, with multi-sample dropout, and keep it only if validation macro-F1 says so.

Why (training/EXPERIMENTS.md, issue 11, feed validation, 442 read posts): the jointly fine-tuned head
of v0002 reached macro-F1 0.472; the same linear head refit on its frozen vectors 0.493 (mean of 3
seeds), and with multi-sample dropout (4 masks, p 0.3) 0.503 (sd 0.002), top-2 0.875 vs 0.876,
calibration error after temperature 0.045 vs 0.057. The joint run chooses its epoch by the mean of
motive macro-F1 and tier QWK, and the motive head moves with the encoder until the last step; a head
fit to the finished encoder, with the same class weights, is a cheap and steady gain. The number of
epochs is fixed (not chosen on validation); validation only decides whether the new head replaces
the old one. The head keeps its shape (one linear layer), so bundles, int8 and explanations are
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sharelens.labels import MOTIVE2ID, MOTIVES
from sharelens.modeling import ShareLensModel
from training.data import motive_class_weights
from training.tier_refit import pooled_vectors


@dataclass
class MotiveRefitReport:
    train_posts: int
    validation_posts: int
    epochs: int
    validation_macro_f1_before: float
    validation_macro_f1_after: float
    kept: bool  # False: the refit head was worse on validation and the fine-tuned one stayed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _macro_f1(head: torch.nn.Linear, z: torch.Tensor, y: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    with torch.no_grad():
        pred = head(z).argmax(-1).numpy()
    return float(f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro", zero_division=0))


def fit_linear_head(head: torch.nn.Linear, z: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor,
                    epochs: int, samples: int = 4, dropout: float = 0.3, lr: float = 2e-3, seed: int = 0,
                    sample_weight: torch.Tensor | None = None) -> None:
    """Weighted cross-entropy averaged over `samples` dropout masks of each batch (multi-sample
    dropout, Inoue 2019), AdamW, batches of 64; trains `head` in place. `sample_weight` multiplies
    each post's class weight (e.g. a domain's share)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    w = class_weight[y] if sample_weight is None else class_weight[y] * sample_weight
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            losses = [torch.nn.functional.cross_entropy(head(torch.nn.functional.dropout(z[idx], dropout)), y[idx],
                                                        reduction="none") for _ in range(samples)]
            loss = (torch.stack(losses).mean(0) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()


def refit_motive_head(model: ShareLensModel, tokenizer, corpus, train_splits: list[str], validation_split: str,
                      max_length: int, epochs: int = 60, class_weighting: str = "inverse_sqrt", seed: int = 0
                      ) -> MotiveRefitReport:
    """Refit `model.motive_head` in place on the read posts of the training splits."""
    rows = [r for s in train_splits if s in corpus for r in corpus[s] if r["motive"]]
    val = [r for r in corpus[validation_split] if r["motive"]]
    z = pooled_vectors(model, tokenizer, [r["text"] for r in rows], max_length)
    zv = pooled_vectors(model, tokenizer, [r["text"] for r in val], max_length)
    y = torch.tensor([MOTIVE2ID[r["motive"]] for r in rows])
    yv = np.array([MOTIVE2ID[r["motive"]] for r in val])
    before = _macro_f1(model.motive_head, zv, yv)
    torch.manual_seed(seed)
    head = torch.nn.Linear(model.motive_head.in_features, len(MOTIVES))
    # the class weights of the fine-tuning run (inverse square root of frequency); a loaded bundle
    # does not keep them as a tensor, so they are recomputed from the same posts
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, class_weighting))
    fit_linear_head(head, z, y, weight, epochs, seed=seed)
    after = _macro_f1(head, zv, yv)
    kept = after >= before
    if kept:
        with torch.no_grad():
            model.motive_head.weight.copy_(head.weight)
            model.motive_head.bias.copy_(head.bias)
    return MotiveRefitReport(len(rows), len(val), epochs, before, after, kept)
