"""Second stage of training: refit the tier head (text projection, context fusion, ordinal biases)
on the fine-tuned encoder's frozen pooled vectors, choosing the number of epochs on validation.

Why: the encoder is fine-tuned for both heads at once, and an epoch over ~13k posts costs ~20 minutes
on 2 cores; the tier head is a few thousand parameters that fit in seconds once the text is encoded.
Refitting it alone, many epochs, with context dropout, selected by the validation QWK of the full
context row (as served: no observed age), is the cheap way to get the head right. The motive head and
the encoder are left untouched, so motive figures do not change.

    python -m training.cli refit-tier [--model NAME] [--version REF]   # a new version from an existing one

Measured (see training/EXPERIMENTS.md): on the frozen base encoder this head reaches feed validation
QWK 0.40-0.42 with context against 0.06 without.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sharelens.context_features import ContextFeatures
from sharelens.labels import TIERS
from sharelens.modeling import ShareLensModel, median_tier, tier_probs_from_logits
from sharelens.post import Post
from training.data import TIER_TRAINED_DOMAINS, record_context_ids


@dataclass
class RefitReport:
    train_posts: int
    validation_posts: int
    epochs: int
    validation_qwk_before: float
    validation_qwk_after: float
    history: list[tuple[int, float]]

    def to_dict(self) -> dict:
        return {**self.__dict__, "history": [list(h) for h in self.history]}


@torch.no_grad()
def pooled_vectors(model: ShareLensModel, tokenizer, texts: list[str], max_length: int, batch: int = 64) -> torch.Tensor:
    """The frozen encoder's pooled vectors of `texts`, in input order (shortest first in batches, so
    padding stays small); what both head refits train on."""
    model.eval()
    order = np.argsort([len(t) for t in texts])
    out = torch.zeros(len(texts), model.encoder.config.hidden_size)
    device = next(model.parameters()).device
    for i in range(0, len(texts), batch):
        idx = order[i:i + batch]
        enc = tokenizer([texts[j] for j in idx], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        out[torch.as_tensor(idx)] = model.pool(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu()
    return out


def _qwk(model: ShareLensModel, z: torch.Tensor, ids: torch.Tensor, y: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    model.eval()
    with torch.no_grad():
        p = tier_probs_from_logits(model.heads(z, ids).tier_logits).numpy()
    return float(cohen_kappa_score(y, median_tier(p), weights="quadratic", labels=list(range(len(TIERS)))))


def refit_tier_head(model: ShareLensModel, tokenizer, features: ContextFeatures, corpus, train_splits: list[str],
                    validation_split: str, max_length: int, observed_age: bool = True, max_epochs: int = 60,
                    check_every: int = 5, lr: float = 3e-3, seed: int = 0) -> RefitReport:
    """Refit the tier head of `model` in place; the best validation epoch's weights are kept."""
    torch.manual_seed(seed)
    rows = [r for s in train_splits if s in corpus for r in corpus[s] if r["domain"] in TIER_TRAINED_DOMAINS]
    val = [r for r in corpus[validation_split] if r["domain"] in TIER_TRAINED_DOMAINS]
    z = pooled_vectors(model, tokenizer, [r["text"] for r in rows], max_length)
    zv = pooled_vectors(model, tokenizer, [r["text"] for r in val], max_length)
    ids = torch.tensor([record_context_ids(features, r, observed_age) for r in rows], dtype=torch.long)
    # validation as served: the caller's context, no observed age
    ids_v = torch.tensor([features.encode(Post.from_record(r).context) for r in val], dtype=torch.long)
    y = torch.tensor([TIERS.index(r["tier"]) for r in rows])
    yv = np.array([TIERS.index(r["tier"]) for r in val])
    head = {n: p for n, p in model.named_parameters() if n.startswith(("tier_", "context."))}
    opt = torch.optim.AdamW(list(head.values()), lr=lr, weight_decay=0.01)
    levels = torch.arange(len(TIERS) - 1)
    before = best = _qwk(model, zv, ids_v, yv)
    best_state = {n: p.detach().clone() for n, p in head.items()}
    best_epoch, history = 0, [(0, before)]
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(rows))
        for i in range(0, len(rows), 64):
            b = perm[i:i + 64]
            out = model.heads(z[b], ids[b])  # dropout and context dropout are on in train mode
            target = (y[b].unsqueeze(1) > levels).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.tier_logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % check_every == 0:
            q = _qwk(model, zv, ids_v, yv)
            history.append((epoch, q))
            if q > best:
                best, best_epoch = q, epoch
                best_state = {n: p.detach().clone() for n, p in head.items()}
    with torch.no_grad():
        for n, p in head.items():
            p.copy_(best_state[n])
    model.eval()
    return RefitReport(len(rows), len(val), best_epoch, before, best, history)
