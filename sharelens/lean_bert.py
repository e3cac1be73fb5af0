"""A BERT encoder for inference in plain torch: the serving runtime's network, without transformers.

Why: importing transformers' `BertModel` pulls in torch._dynamo, sympy, torch.distributed.tensor
and the hub-kernels machinery: about 4 s of a 7 s cold start and 100+ MB of resident memory on
the 2-core machine, for a forward pass that is forty lines of torch. Serving and `make eval`
load bundles through this module (`runtime="lean"`, the default where it applies); training keeps
transformers' model, whose weights this one loads unchanged.

Same function, same parameters: module and parameter names mirror transformers' `BertModel`
(embeddings.word_embeddings, encoder.layer.N.attention.self.query, ...), so a bundle's
safetensors load strictly into either, and the int8 export (which addresses Linear layers by
name) quantises either. Equality with transformers on the same weights is tested on a tiny
config and on the real converted multilingual-e5-small (tests/sharelens/test_lean_bert.py,
tests/training/test_encoder_conversion.py).

What it covers: BERT with absolute positions, token type 0, the activations in `ACTIVATIONS`, no
pooler, no cross-attention, no cache. `unsupported()` names anything else, and the loader falls
back to transformers for such a config."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class LeanBertConfig:
    """The fields of a transformers BertConfig (config.json) that the forward pass reads."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LeanBertConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names and v is not None})


def unsupported(doc: dict[str, Any]) -> str | None:
    """Why this config.json cannot run here (None: it can)."""
    if doc.get("model_type") != "bert":
        return f"model_type {doc.get('model_type')!r} is not bert"
    if doc.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {doc.get('position_embedding_type')!r}"
    if doc.get("hidden_act", "gelu") not in ACTIVATIONS:
        return f"hidden_act {doc.get('hidden_act')!r}"
    if doc.get("is_decoder") or doc.get("add_cross_attention"):
        return "a decoder configuration"
    if doc.get("chunk_size_feed_forward"):
        return "chunked feed-forward"
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(doc.get(key), int):
            return f"no integer {key}"
    if doc["hidden_size"] % doc["num_attention_heads"]:
        return "hidden_size is not a multiple of num_attention_heads"
    return None


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor


class Embeddings(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)  # noqa: N815 - transformers' name

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        length = inputs_embeds.shape[1]
        # Token type 0 everywhere and positions from 0: what transformers does when given neither.
        x = inputs_embeds + self.token_type_embeddings.weight[0] + self.position_embeddings.weight[:length]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(self.head_dim))
        return out.transpose(1, 2).reshape(b, n, -1)


class DenseLayerNorm(nn.Module):
    """transformers' BertSelfOutput / BertOutput: dense, residual, LayerNorm."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)  # noqa: N815

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseLayerNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseLayerNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, c: LeanBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class LeanBertModel(nn.Module):
    """`BertModel(config, add_pooling_layer=False)` for inference and gradients (no dropout)."""

    def __init__(self, config: LeanBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> EncoderOutput:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.embeddings.word_embeddings(input_ids)
        if inputs_embeds.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"{inputs_embeds.shape[1]} tokens exceed the {self.config.max_position_embeddings} "
                             "positions of this encoder")
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # (batch, 1, 1, keys): True where a key may be attended to. An unpadded batch (a single
            # text above all) passes no mask, which lets SDPA take its fastest kernel.
            mask = attention_mask.bool()[:, None, None, :]
        return EncoderOutput(self.encoder(self.embeddings(inputs_embeds), mask))
