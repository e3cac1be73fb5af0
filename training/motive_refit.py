"""Second stage of training for the motive head: refit it alone on the fine-tuned encoder's frozen
pooled vectors, with multi-sample dropout, and keep it only if validation macro-F1 says so.

Why (training/EXPERIMENTS.md, issue 11, feed validation, 442 read posts): the jointly fine-tuned head
of v0002 reached macro-F1 0.472; the same linear head refit on its frozen vectors 0.493 (mean of 3
seeds), and with multi-sample dropout (4 masks, p 0.3) 0.503 (sd 0.002), top-2 0.875 vs 0.876,
calibration error after temperature 0.045 vs 0.057. The joint run chooses its epoch by the mean of
motive macro-F1 and tier QWK, and the motive head moves with the encoder until the last step; a head
fit to the finished encoder, with the same class weights, is a cheap and steady gain. The number of
epochs is fixed (not chosen on validation); validation only decides whether the new head replaces
the old one: the mean macro-F1 over the validation splits with read posts (`motive_validation_splits`:
the feed's `validation` and, since round 4 of the annotations, the ordinary accounts'
`ordinary_validation`), so that neither population is traded away unseen (EXPERIMENTS.md, "The ordinary
accounts' read posts": with their posts the refit head gains 8 points on ordinary accounts and loses
0.6 on the feed, mean of nine seeds). The head keeps its shape (one linear layer), so bundles, int8 and explanations are
unchanged.

Several seeds, averaged (`motive_refit_seeds`, EXPERIMENTS.md, "Seeds of the motive refit"): one refit head's
validation figure depends on its seed more than on any setting tried since (v0008's encoder, ten seeds: feed
validation macro-F1 0.461-0.507, mean over both populations 0.514-0.547; seed 42, the default, gave the lowest
feed figure and `make train` dropped its refit). The heads are linear, so the mean of their logits is exactly one
linear head with the mean weights: averaging `k` heads costs k fits in training (~25 s each on 11,000 posts, 2
cores) and nothing in serving. Five averaged heads read 0.527 and 0.533 (two disjoint sets of seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sharelens.errors import SharelensError
from sharelens.labels import MOTIVE2ID, MOTIVES
from sharelens.modeling import ShareLensModel
from training.data import motive_class_weights
from training.tier_refit import pooled_vectors


@dataclass
class MotiveRefitReport:
    train_posts: int
    validation_posts: int
    epochs: int
    validation_macro_f1_before: float  # the mean over the validation splits of `by_split`
    validation_macro_f1_after: float
    kept: bool  # False: the refit head was worse on validation and the fine-tuned one stayed
    by_split: dict[str, dict] = field(default_factory=dict)  # split -> {posts, before, after}
    seeds: list[int] = field(default_factory=list)  # the refit head is the mean of one head per seed

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        splits = ", ".join(f"{s} {b['before']:.3f} -> {b['after']:.3f} ({b['posts']})" for s, b in self.by_split.items())
        return (f"Motive head refit on the frozen encoder: validation macro-F1 {self.validation_macro_f1_before:.3f} -> "
                f"{self.validation_macro_f1_after:.3f}, mean of {splits} ({'kept' if self.kept else 'not kept'}; "
                f"{self.train_posts} training posts; mean of {len(self.seeds)} heads, seeds {self.seeds})")


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


def refit_motive_head(model: ShareLensModel, tokenizer, corpus, train_splits: list[str],
                      validation_splits: str | Sequence[str], max_length: int, epochs: int = 60,
                      class_weighting: str = "inverse_sqrt", seed: int = 0, seeds: int = 1) -> MotiveRefitReport:
    """Refit `model.motive_head` in place on the read posts of the training splits: the mean of `seeds` heads
    fitted with seeds `seed`, `seed + 1`, ...; keep it when the mean macro-F1 over `validation_splits` (those
    with read posts) does not drop."""
    if seeds < 1:
        raise SharelensError("E325", f"motive_refit_seeds is {seeds}: the motive refit needs at least one seed")
    if isinstance(validation_splits, str):
        validation_splits = [validation_splits]
    rows = [r for s in train_splits if s in corpus for r in corpus[s] if r["motive"]]
    val = {s: [r for r in corpus[s] if r["motive"]] for s in validation_splits if s in corpus}
    val = {s: v for s, v in val.items() if v}
    if not val:
        raise SharelensError("E324", f"none of the validation splits {list(validation_splits)} has read motive posts: "
                             "the refit head could not be checked; annotate one or set motive_refit_epochs: 0")
    z = pooled_vectors(model, tokenizer, [r["text"] for r in rows], max_length)
    zv = {s: pooled_vectors(model, tokenizer, [r["text"] for r in v], max_length) for s, v in val.items()}
    yv = {s: np.array([MOTIVE2ID[r["motive"]] for r in v]) for s, v in val.items()}
    y = torch.tensor([MOTIVE2ID[r["motive"]] for r in rows])
    by_split = {s: {"posts": len(v), "before": _macro_f1(model.motive_head, zv[s], yv[s])} for s, v in val.items()}
    # the class weights of the fine-tuning run (inverse square root of frequency); a loaded bundle
    # does not keep them as a tensor, so they are recomputed from the same posts
    weight = torch.from_numpy(motive_class_weights({"motive_label": y.tolist()}, class_weighting))
    seed_list = [seed + i for i in range(seeds)]
    head = average_linear_heads([_fit_one(model.motive_head.in_features, z, y, weight, epochs, s) for s in seed_list])
    for s in val:
        by_split[s]["after"] = _macro_f1(head, zv[s], yv[s])
    before = float(np.mean([b["before"] for b in by_split.values()]))
    after = float(np.mean([b["after"] for b in by_split.values()]))
    kept = after >= before
    if kept:
        with torch.no_grad():
            model.motive_head.weight.copy_(head.weight)
            model.motive_head.bias.copy_(head.bias)
    return MotiveRefitReport(len(rows), sum(len(v) for v in val.values()), epochs, before, after, kept, by_split,
                             seed_list)


def _fit_one(in_features: int, z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, epochs: int,
             seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(in_features, len(MOTIVES))
    fit_linear_head(head, z, y, weight, epochs, seed=seed)
    return head


def average_linear_heads(heads: Sequence[torch.nn.Linear]) -> torch.nn.Linear:
    """One linear head whose logits are the mean of the heads' logits (mean weights and biases)."""
    out = torch.nn.Linear(heads[0].in_features, heads[0].out_features)
    with torch.no_grad():
        out.weight.copy_(torch.stack([h.weight for h in heads]).mean(0))
        out.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
    return out
