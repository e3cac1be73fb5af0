"""Second stage of training: the tier head (text projection, context fusion, ordinal biases) fitted
on the fine-tuned encoder's frozen pooled vectors, on every tier-labelled post up to the most recent.

Why up to the most recent: how far a post travels depends on which channels are live and how the
feed treats them *now*, and the newest labelled posts are the validation splits (the corpus is split
by time). Measured forward in time on validation (training/EXPERIMENTS.md, "Third round"): a head
trained on the training splits alone reaches QWK 0.37 (sd 0.02 over 5 seeds) on the later half of
the feed validation split; the same head also trained on the earlier half reaches 0.62 (sd 0.02), the
context baselines 0.35-0.38 -> 0.49. 43% of the feed test posts are in channels the training split
never shows (47% in channels seen fewer than `channel_min_count` times, i.e. unknown to the model);
with validation in the vocabulary, 17% stay unknown.

Two fits, each `epochs` long from a fresh head with a fixed seed (no epoch is chosen on the posts
it is then read on):

1. forward check: trained on the training splits plus the earlier half (by posting date) of each
   recent split, read on the later half as served (the caller's context, no observed age). Its
   figures are recorded in the bundle for the tier head; they are optimistic, since the head's
   settings were chosen on the same later half (training/EXPERIMENTS.md). The later half is also
   where the tier temperature is fitted (calibration.json), on posts that head never saw, and then
   applied to the final head;
2. final: the same, on the training splits plus all of the recent splits, with the channel
   vocabulary of all of them. This is the head the bundle ships.

Training choices, each measured on the forward check (training/EXPERIMENTS.md): 30 epochs at
learning rate 3e-3; each post weighted by the inverse square root of its tier's frequency (the
ordinary accounts are 98% `low`; unweighted, the text-only answer collapses towards `low`: QWK 0.06
against 0.16); an exponential moving average of the weights (decay 0.99, so about the last hundred
steps, started at one third of training: text-only QWK 0.16 against 0.12 without, full context
equal); context dropout (`ContextFusion`), so that one head answers from the text alone, partial
context and full context.

    python -m training.cli refit --heads tier [--model NAME] [--version REF]   # a new version
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sharelens.context_features import ContextFeatures
from sharelens.labels import TIERS
from sharelens.modeling import tier_probs_from_logits
from sharelens.network import ContextFusion, initial_tier_bias
from sharelens.post import Post
from training.data import TIER_TRAINED_DOMAINS, record_context_ids
from training.metrics import fit_temperature, tier_metrics, tier_nll

LEVELS = torch.arange(len(TIERS) - 1)


@dataclass
class TierHeadSettings:
    """How the head is fitted (the defaults are the forward check's choices)."""

    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    ema: float = 0.99          # weight average over the last two thirds of the steps; 0: off
    text_only_weight: float = 0.0  # a second loss term with every context slot unknown; 0: off
    class_balance: float = 0.5  # each post weighs (n / (4 n_tier)) ** class_balance; 0: unweighted
    dropout: float = 0.1       # on the pooled vector, as the network's own head dropout
    seed: int = 0


@dataclass
class RefitReport:
    train_posts: int
    train_splits: list[str]
    recent_splits: list[str]
    epochs: int
    channels: int
    forward: dict = field(default_factory=dict)
    temperature: float | None = None  # None: no later posts to fit it on (the tier then stays at T = 1)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        checks = "; ".join(f"{d} QWK {m['qwk']:.3f} / macro-F1 {m['macro_f1']:.3f} (text only QWK "
                           f"{m['qwk_text_only']:.3f}) on {m['posts']} later posts"
                           for d, m in self.forward.get("per_domain", {}).items()) or "no later posts to check on"
        temperature = "none (no later posts)" if self.temperature is None else f"{self.temperature:.2f}"
        return (f"Tier head fitted on the frozen encoder, {self.epochs} epochs: forward check {checks}; "
                f"temperature {temperature}; final head on {self.train_posts} posts "
                f"({', '.join(self.train_splits)}), {self.channels} channels")


@torch.no_grad()
def pooled_vectors(model, tokenizer, texts: list[str], max_length: int, batch: int = 64) -> torch.Tensor:
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


class TierHead(torch.nn.Module):
    """The tier half of the network on its own (same parameter names as in `ShareLensHeads`), so a
    fitted head is copied into a model as it is."""

    def __init__(self, hidden: int, sizes: list[int]) -> None:
        super().__init__()
        self.tier_proj = torch.nn.Linear(hidden, 1, bias=False)
        self.tier_bias = torch.nn.Parameter(initial_tier_bias(len(TIERS)))
        self.context = ContextFusion(hidden, sizes)

    def forward(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.tier_proj(z) + self.context(z, ids) + self.tier_bias

    @torch.no_grad()
    def probabilities(self, z: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
        self.eval()
        return tier_probs_from_logits(self(z, ids)).numpy()

    @torch.no_grad()
    def logits(self, z: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
        self.eval()
        return self(z, ids).numpy()


def fit_tier_head(z: torch.Tensor, ids: torch.Tensor, y: torch.Tensor, sizes: list[int],
                  settings: TierHeadSettings | None = None, sample_weight: torch.Tensor | None = None) -> TierHead:
    """A fresh head trained on pooled vectors `z`, context categories `ids` and tier indices `y`
    (CORAL's cumulative binary targets), each post weighted by `sample_weight` (default 1) times its
    tier's class-balance weight."""
    s = settings or TierHeadSettings()
    torch.manual_seed(s.seed)
    head = TierHead(z.shape[1], sizes)
    params = list(head.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    steps_per_epoch = -(-len(y) // s.batch_size)
    average_from = (s.epochs * steps_per_epoch) // 3
    averaged: list[torch.Tensor] | None = None
    counts = torch.bincount(y, minlength=len(TIERS)).clamp(min=1).float()
    tier_weight = (len(y) / (len(TIERS) * counts)) ** s.class_balance
    step = 0
    for _ in range(s.epochs):
        head.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), s.batch_size):
            b = perm[i:i + s.batch_size]
            zb = torch.nn.functional.dropout(z[b], s.dropout)
            target = (y[b, None] > LEVELS).float()
            weight = tier_weight[y[b]][:, None]
            if sample_weight is not None:
                weight = weight * sample_weight[b][:, None]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(zb, ids[b]), target, weight=weight)
            if s.text_only_weight:
                text_only = torch.nn.functional.binary_cross_entropy_with_logits(
                    head(zb, torch.zeros_like(ids[b])), target, weight=weight)
                loss = loss + s.text_only_weight * text_only
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if s.ema and step > average_from:
                with torch.no_grad():
                    if averaged is None:
                        averaged = [p.detach().clone() for p in params]
                    else:
                        for a, p in zip(averaged, params, strict=True):
                            a.mul_(s.ema).add_(p.detach(), alpha=1 - s.ema)
    if averaged is not None:
        with torch.no_grad():
            for a, p in zip(averaged, params, strict=True):
                p.copy_(a)
    head.eval()
    return head


def tier_rows(corpus, splits: Sequence[str]) -> list[dict]:
    return [r for s in splits if s in corpus for r in corpus[s] if r["domain"] in TIER_TRAINED_DOMAINS]


def forward_cut(rows: list[dict]) -> str | None:
    """The posting date that ends the earlier half of `rows` (the median date, as written in the
    record: China time for every source here): posts on or before it are the earlier half, ties
    included. None when the rows carry no dates. A post without a date counts as earlier (it cannot
    be shown to be later)."""
    dates = sorted(str(r["posted_at"])[:10] for r in rows if r.get("posted_at"))
    return dates[(len(dates) - 1) // 2] if dates else None


def forward_halves(rows: list[dict]) -> tuple[list[int], list[int], str | None]:
    """(indices of the earlier half, of the later half, the cut date) of `rows` by `forward_cut`."""
    cut = forward_cut(rows)
    if cut is None:
        return list(range(len(rows))), [], None
    day = [str(r.get("posted_at") or "")[:10] for r in rows]
    return [i for i, d in enumerate(day) if d <= cut], [i for i, d in enumerate(day) if d > cut], cut


def _split_forward(corpus, recent_splits: Sequence[str]) -> tuple[list[dict], list[dict], dict[str, str]]:
    early, late, cuts = [], [], {}
    for split in recent_splits:
        rows = tier_rows(corpus, [split])
        first, second, cut = forward_halves(rows)
        if cut is None:
            continue
        cuts[split] = cut
        early += [rows[i] for i in first]
        late += [rows[i] for i in second]
    return early, late, cuts


def _tiers(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([TIERS.index(r["tier"]) for r in rows], dtype=torch.long)


def _training_ids(features: ContextFeatures, rows: list[dict], observed_age: bool) -> torch.Tensor:
    return torch.tensor([record_context_ids(features, r, observed_age) for r in rows], dtype=torch.long)


def _served_ids(features: ContextFeatures, rows: list[dict]) -> torch.Tensor:
    """As the API feeds the head: the caller's context, no observed age."""
    return torch.tensor([features.encode(Post.from_record(r).context) for r in rows], dtype=torch.long)


def refit_tier_head(model, tokenizer, corpus, train_splits: Sequence[str], recent_splits: Sequence[str],
                    max_length: int, observed_age: bool = True, channel_min_count: int = 3,
                    settings: TierHeadSettings | None = None) -> tuple[RefitReport, ContextFeatures]:
    """Fit the forward check and the final head; install the final head (and its context features)
    in `model`. Returns the report and the new context features (what the bundle must save)."""
    s = settings or TierHeadSettings()
    recent_splits = [r for r in recent_splits if r in corpus and r not in train_splits]
    by_split = {sp: tier_rows(corpus, [sp]) for sp in train_splits}
    base = [r for rows in by_split.values() for r in rows]
    early, late, cuts = _split_forward(corpus, recent_splits)
    everything = base + early + late
    vectors = pooled_vectors(model, tokenizer, [r["text"] for r in everything], max_length)
    n_base, n_early = len(base), len(early)
    z_fwd, z_late = vectors[:n_base + n_early], vectors[n_base + n_early:]

    forward: dict = {"cut": cuts, "train_posts": n_base + n_early, "holdout_posts": len(late)}
    temperature = None
    if late:
        rows_fwd = base + early
        feats_fwd = ContextFeatures.fit(rows_fwd, min_count=channel_min_count)
        head = fit_tier_head(z_fwd, _training_ids(feats_fwd, rows_fwd, observed_age), _tiers(rows_fwd),
                             feats_fwd.sizes(), s)
        y_late = _tiers(late).numpy()
        ids_late = _served_ids(feats_fwd, late)
        logits = head.logits(z_late, ids_late)
        temperature = fit_temperature(tier_nll(logits, y_late))
        forward["temperature"] = temperature
        forward["per_domain"] = {}
        for domain in sorted({r["domain"] for r in late}):
            idx = [i for i, r in enumerate(late) if r["domain"] == domain]
            full = tier_metrics(y_late[idx], head.probabilities(z_late[idx], ids_late[idx]))
            text = tier_metrics(y_late[idx], head.probabilities(z_late[idx], torch.zeros_like(ids_late[idx])))
            forward["per_domain"][domain] = {"posts": len(idx), "qwk": full["qwk"], "macro_f1": full["macro_f1"],
                                             "qwk_text_only": text["qwk"], "macro_f1_text_only": text["macro_f1"]}

    features = ContextFeatures.fit(everything, min_count=channel_min_count)
    head = fit_tier_head(vectors, _training_ids(features, everything, observed_age), _tiers(everything),
                         features.sizes(), s)
    install_tier_head(model, head, features)
    contributing = [sp for sp, rows in by_split.items() if rows] + list(cuts)
    report = RefitReport(train_posts=len(everything), train_splits=contributing,
                         recent_splits=list(cuts), epochs=s.epochs,
                         channels=len(features.channels), forward=forward, temperature=temperature,
                         settings=asdict(s))
    return report, features


def install_tier_head(model, head: TierHead, features: ContextFeatures) -> None:
    """Replace the model's tier head and context features by `head`'s (the channel vocabulary, and so
    the context embedding tables, may have grown)."""
    with torch.no_grad():
        model.tier_proj.weight.copy_(head.tier_proj.weight)
        model.tier_bias.copy_(head.tier_bias)
    fusion = ContextFusion(head.tier_proj.in_features, features.sizes())
    fusion.load_state_dict(head.context.state_dict())
    device = next(model.parameters()).device
    model.context = fusion.to(device)
    model.config.context_sizes = features.sizes()
    model.config.context_features = json.loads(json.dumps(features.to_dict()))  # as save_bundle writes it
    model.context_features = features
    model.eval()

