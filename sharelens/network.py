"""The sharelens network's own layers, in plain torch: pooling, the two heads, the context fusion
and the loss. Shared by the transformers model (`sharelens.modeling_sharelens.ShareLensModel`,
training and Hugging Face loading) and the lean serving network (`sharelens.modeling`), so that
what is trained, evaluated and served is one function.

- motive head: a softmax over the spec's motives;
- tier head: ordinal (CORAL, Cao et al. 2020): one shared projection and ordered biases give
  P(tier > k) for every tier but the last, so predicting `high` for a `viral` post costs less
  than predicting `low`.

This file is copied into every Hugging Face-native bundle beside `modeling_sharelens.py` (what
`trust_remote_code=True` runs), so it imports torch and nothing of sharelens.

Weight names: in memory (`state_dict()`) the encoder's tensors are under `encoder.`; in a bundle's
model.safetensors they have the encoder's own names (`embeddings.…`, `encoder.layer.…` for BERT),
so that a plain `AutoModel.from_pretrained(bundle)` finds them. `to_file_keys` / `from_file_keys`
convert; the head tensors keep their names either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IGNORE = -100
POOLINGS = ("mean",)
# The head tensors' names (in memory and on file); every other tensor belongs to the encoder.
HEAD_PREFIXES = ("motive_head.", "tier_proj.", "context.")
HEAD_NAMES = ("tier_bias",)
ENCODER_PREFIX = "encoder."


@dataclass
class HeadOutputs:
    motive_logits: torch.Tensor  # (batch, motives)
    tier_logits: torch.Tensor  # (batch, tiers - 1): logit of P(tier > k)


def tier_probs_from_logits(tier_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cumulative logits -> a distribution over the tiers (rank-consistent by construction
    of CORAL; the clamp guards the rare float inversion)."""
    s = torch.sigmoid(tier_logits / temperature)
    s = torch.cummin(s, dim=-1).values  # P(>low) >= P(>medium) >= P(>high)
    ones = torch.ones_like(s[..., :1])
    zeros = torch.zeros_like(s[..., :1])
    upper = torch.cat([ones, s], dim=-1)
    lower = torch.cat([s, zeros], dim=-1)
    p = (upper - lower).clamp_min(0)
    return p / p.sum(dim=-1, keepdim=True)


def is_head_key(key: str) -> bool:
    return key in HEAD_NAMES or key.startswith(HEAD_PREFIXES)


def to_file_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory names -> the names in a Hugging Face-native bundle (the encoder's own names)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if is_head_key(key):
            out[key] = value
        elif key.startswith(ENCODER_PREFIX) and not is_head_key(key[len(ENCODER_PREFIX):]):
            out[key[len(ENCODER_PREFIX):]] = value
        else:
            raise ValueError(f"tensor {key!r} is neither the encoder's nor a head's; cannot name it in a bundle")
    return out


def from_file_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names in a Hugging Face-native bundle -> in-memory names (inverse of `to_file_keys`)."""
    return {key if is_head_key(key) else ENCODER_PREFIX + key: value for key, value in state.items()}


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


def initial_tier_bias(tiers: int) -> torch.Tensor:
    """Ordered thresholds to start from ([1, 0, -1] for four tiers)."""
    return torch.linspace(1.0, -1.0, tiers - 1) if tiers > 2 else torch.zeros(tiers - 1)


class ShareLensHeads:
    """Mixin for an `nn.Module` with an `encoder` attribute (transformers' model or
    `sharelens.lean_bert`'s): builds the heads, pools, runs both heads, computes the loss."""

    encoder: nn.Module

    def _build_heads(self, hidden: int, motives: int, tiers: int, dropout: float = 0.1,
                     context_sizes: list[int] | None = None, pooling: str = "mean") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.motive_head = nn.Linear(hidden, motives)
        self.tier_proj = nn.Linear(hidden, 1, bias=False)
        self.tier_bias = nn.Parameter(initial_tier_bias(tiers))
        # None: a text-only network (bundles made before context existed load as such)
        self.context = ContextFusion(hidden, context_sizes) if context_sizes else None
        self.register_buffer("motive_class_weight", torch.ones(motives), persistent=False)
        self.motive_loss_weight = 1.0
        self.tier_loss_weight = 1.0

    @property
    def context_slots(self) -> int:
        return len(self.context.sizes) if self.context is not None else 0

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
        if attention_mask is None:  # every token is real
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]  # type: ignore[index]
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
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
            levels = torch.arange(out.tier_logits.shape[-1], device=y.device)
            target = (y.unsqueeze(1) > levels).to(out.tier_logits.dtype)
            total = total + self.tier_loss_weight * nn.functional.binary_cross_entropy_with_logits(
                out.tier_logits[keep], target)
        return total

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """torch's, also accepting a bundle's file names (`to_file_keys`): the HF Trainer reloads
        its best checkpoint (written by `save_pretrained`) through this."""
        own = self.state_dict().keys()  # type: ignore[attr-defined]
        if any(k not in own for k in state_dict):
            renamed = from_file_keys(dict(state_dict))
            if all(k in own for k in renamed):
                state_dict = renamed
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]


class ShareLensNetwork(ShareLensHeads, nn.Module):
    """The sharelens network around any encoder module, without transformers: what serving runs
    on `sharelens.lean_bert` (`lean_network`). Same parameters and names as `ShareLensModel`."""

    def __init__(self, encoder: nn.Module, motives: int, tiers: int, dropout: float = 0.0,
                 context_sizes: list[int] | None = None, pooling: str = "mean") -> None:
        super().__init__()
        self.encoder = encoder
        self._build_heads(encoder.config.hidden_size, motives, tiers, dropout=dropout,
                          context_sizes=context_sizes, pooling=pooling)

    @property
    def config(self):  # noqa: ANN201 - the encoder's config, as `ShareLensModel.encoder.config`
        return self.encoder.config


def lean_network(config: dict, context_sizes: list[int] | None = None, motives: int | None = None,
                 tiers: int | None = None) -> ShareLensNetwork:
    """The network on `sharelens.lean_bert` from a bundle's config.json (an encoder config, with or
    without the sharelens fields). Head sizes: given, else config.json's labels, else the spec's."""
    from .labels import MOTIVES, TIERS
    from .lean_bert import LeanBertConfig, LeanBertModel

    if motives is None:
        motives = len(config.get("motive_id2label") or MOTIVES)
    if tiers is None:
        tiers = len(config.get("tier_id2label") or TIERS)
    return ShareLensNetwork(LeanBertModel(LeanBertConfig.from_dict(config)), motives, tiers, dropout=0.0,
                            context_sizes=context_sizes, pooling=config.get("pooling", "mean"))

