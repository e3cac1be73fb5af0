"""The sharelens network: one pretrained encoder, two heads.

- motive head: 10-way softmax over the spec's motives;
- tier head: ordinal (CORAL, Cao et al. 2020): one shared projection and three ordered biases
  give P(tier > k) for k = low, medium, high, so predicting `high` for a `viral` post costs less
  than predicting `low`.

The encoder is any BERT-family model transformers can build (`AutoModel`): the materialised
multilingual-e5-small, a hub id such as `hfl/chinese-roberta-wwm-ext`, or a tiny test config.
Both training and serving build the network from here, so what is evaluated is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sharelens.labels import MOTIVES, TIERS

if TYPE_CHECKING:  # transformers is imported only where a transformers encoder is built: serving
    from transformers import PretrainedConfig  # runs on sharelens.lean_bert without it

IGNORE = -100


@dataclass
class HeadOutputs:
    motive_logits: torch.Tensor  # (batch, 10)
    tier_logits: torch.Tensor  # (batch, 3): logit of P(tier > k)


def tier_probs_from_logits(tier_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cumulative logits -> a distribution over the four tiers (rank-consistent by construction
    of CORAL; the clamp guards the rare float inversion)."""
    s = torch.sigmoid(tier_logits / temperature)
    s = torch.cummin(s, dim=-1).values  # P(>low) >= P(>medium) >= P(>high)
    ones = torch.ones_like(s[..., :1])
    zeros = torch.zeros_like(s[..., :1])
    upper = torch.cat([ones, s], dim=-1)
    lower = torch.cat([s, zeros], dim=-1)
    p = (upper - lower).clamp_min(0)
    return p / p.sum(dim=-1, keepdim=True)


def median_tier(tier_probs):  # np.ndarray (..., 4) -> int indices (...)
    """The tier reported as the prediction: the median of the distribution, i.e. the lowest tier
    whose cumulative probability reaches 0.5. Under the ordinal head this is CORAL's own rule
    (the number of thresholds k with P(tier > k) > 0.5, Cao et al. 2020) and the choice that
    minimises the expected distance to the true tier. The single most probable tier (argmax)
    was used before: selected on the validation split, the median gave QWK 0.337 vs 0.294 and
    macro-F1 0.390 vs 0.244, and argmax never predicted `high`."""
    import numpy as np

    cum = np.cumsum(np.asarray(tier_probs, dtype=np.float64), axis=-1)
    return (cum < 0.5 - 1e-9).sum(axis=-1).clip(0, cum.shape[-1] - 1)


class ContextFusion(nn.Module):
    """The context half of the tier head: one small embedding per context slot (index 0 is the
    learned *unknown*, see `sharelens.context_features`), concatenated with a projection of the
    pooled text and mixed by a two-layer MLP into a score added to the text's own tier score.

    Context dropout (training only): each slot is set to unknown with probability `slot_dropout`,
    and the whole context with probability `all_dropout`, so that one model answers from the
    text alone, from partial context and from full context."""

    def __init__(self, hidden: int, sizes: list[int], dim: int = 8, text_dim: int = 32, mlp: int = 64,
                 slot_dropout: float = 0.25, all_dropout: float = 0.2) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)
        self.text = nn.Linear(hidden, text_dim)
        self.mlp = nn.Sequential(nn.Linear(text_dim + dim * len(sizes), mlp), nn.GELU(), nn.Linear(mlp, 1))
        self.slot_dropout = slot_dropout
        self.all_dropout = all_dropout

    def drop(self, ids: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(ids.shape, device=ids.device) >= self.slot_dropout
        keep &= torch.rand(ids.shape[0], 1, device=ids.device) >= self.all_dropout
        return ids * keep

    def forward(self, text: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.training:
            ids = self.drop(ids)
        parts = [self.text(text)] + [emb(ids[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=-1))


class ShareLensModel(nn.Module):
    def __init__(self, encoder: nn.Module, dropout: float = 0.1, context_sizes: list[int] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.motive_head = nn.Linear(hidden, len(MOTIVES))
        self.tier_proj = nn.Linear(hidden, 1, bias=False)
        self.tier_bias = nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))
        # None: a text-only network (bundles made before context existed load as such)
        self.context = ContextFusion(hidden, context_sizes) if context_sizes else None
        self.register_buffer("motive_class_weight", torch.ones(len(MOTIVES)), persistent=False)
        self.motive_loss_weight = 1.0
        self.tier_loss_weight = 1.0

    @property
    def config(self) -> PretrainedConfig | Any:
        return self.encoder.config

    @property
    def context_slots(self) -> int:
        return len(self.context.sizes) if self.context is not None else 0

    @classmethod
    def from_encoder(cls, name_or_path: str, keep_layers: int | None = None, dropout: float = 0.1,
                     context_sizes: list[int] | None = None, **kwargs) -> ShareLensModel:
        """Start from pretrained encoder weights (local folder or hub id)."""
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(name_or_path, **kwargs)
        if keep_layers is not None and keep_layers < config.num_hidden_layers:
            config.num_hidden_layers = keep_layers  # the first k layers; the rest are not loaded
        encoder = AutoModel.from_pretrained(name_or_path, config=config, add_pooling_layer=False, **kwargs)
        return cls(encoder, dropout=dropout, context_sizes=context_sizes)

    @classmethod
    def from_config(cls, encoder_config: PretrainedConfig, dropout: float = 0.1,
                    context_sizes: list[int] | None = None) -> ShareLensModel:
        """An untrained shell with the given encoder shape (weights come from a bundle)."""
        from transformers import AutoModel

        encoder = AutoModel.from_config(encoder_config, add_pooling_layer=False)
        return cls(encoder, dropout=dropout, context_sizes=context_sizes)

    @classmethod
    def lean_from_config(cls, config: dict[str, Any], context_sizes: list[int] | None = None) -> ShareLensModel:
        """The same network on `sharelens.lean_bert` (inference and gradients; no transformers)."""
        from sharelens.lean_bert import LeanBertConfig, LeanBertModel

        return cls(LeanBertModel(LeanBertConfig.from_dict(config)), dropout=0.0, context_sizes=context_sizes)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is not None:
            out = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        else:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        # Mean pooling: what multilingual-e5 was trained with.
        return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def heads(self, pooled: torch.Tensor, context_ids: torch.Tensor | None = None) -> HeadOutputs:
        """Both heads on pooled text; `context_ids` (batch, slots) of category indices, None or
        zeros for unknown context. The motive head reads the text alone (the spec: the motive is
        a property of the text)."""
        z = self.dropout(pooled)
        tier = self.tier_proj(z)
        if self.context is not None:
            if context_ids is None:
                context_ids = torch.zeros(z.shape[0], self.context_slots, dtype=torch.long, device=z.device)
            tier = tier + self.context(z, context_ids)
        return HeadOutputs(self.motive_head(z), tier + self.tier_bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        motive_label: torch.Tensor | None = None,
        tier_label: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        context_ids: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        assert attention_mask is not None
        out = self.heads(self.pool(input_ids, attention_mask, inputs_embeds), context_ids)  # type: ignore[arg-type]
        result = {"motive_logits": out.motive_logits, "tier_logits": out.tier_logits}
        if motive_label is not None or tier_label is not None:
            result["loss"] = self.loss(out, motive_label, tier_label)
        return result

    def loss(self, out: HeadOutputs, motive_label: torch.Tensor | None,
             tier_label: torch.Tensor | None) -> torch.Tensor:
        total = out.motive_logits.sum() * 0.0  # keeps the graph when a batch has no labels at all
        if motive_label is not None and (motive_label != IGNORE).any():
            # Only annotated posts carry a motive; the rest are masked with IGNORE.
            total = total + self.motive_loss_weight * nn.functional.cross_entropy(
                out.motive_logits, motive_label, weight=self.motive_class_weight, ignore_index=IGNORE)
        if tier_label is not None and (tier_label != IGNORE).any():
            keep = tier_label != IGNORE
            y = tier_label[keep]
            levels = torch.arange(len(TIERS) - 1, device=y.device)
            target = (y.unsqueeze(1) > levels).to(out.tier_logits.dtype)
            total = total + self.tier_loss_weight * nn.functional.binary_cross_entropy_with_logits(
                out.tier_logits[keep], target)
        return total
