"""The sharelens network as a Hugging Face model: `ShareLensConfig` and `ShareLensModel`.

One pretrained encoder (any model `AutoModel` builds: the materialised multilingual-e5-small, a hub
id such as `hfl/chinese-roberta-wwm-ext`, a tiny test BERT) and two heads (`sharelens.network`).
Training builds it from here; serving runs the same layers on `sharelens.lean_bert` without
importing transformers (`sharelens.modeling`).

A bundle written by `save_pretrained` is a Hugging Face folder:

- config.json is the encoder's own config (its `model_type`, e.g. `bert`) plus the sharelens
  fields (`motive_id2label`, `tier_id2label` and their `label2id`, `pooling`, `head_dropout`,
  `context_sizes`, `context_features`, `spec_version`, `sharelens_format`) and an `auto_map`;
- model.safetensors holds the encoder's tensors under the encoder's own names and the heads'
  under `motive_head.`, `tier_proj.`, `tier_bias`, `context.`;
- this file and the files it imports relatively are copied beside them.

So `AutoConfig` / `AutoModel.from_pretrained(bundle, trust_remote_code=True)` build this class
with both heads, offline; a plain `AutoModel.from_pretrained(bundle)` builds the fine-tuned encoder
alone with its weights (transformers reports the head tensors as unused, and a BERT pooler, which
sharelens does not have, as newly initialised: sharelens mean-pools `last_hidden_state`).

This file is copied into bundles: it imports torch, transformers and its own package's files
relatively, nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init

from .labels import MOTIVES, SPEC_VERSION, TIERS
from .network import (
    ENCODER_PREFIX,
    HEAD_NAMES,
    HEAD_PREFIXES,
    ShareLensHeads,
    initial_tier_bias,
    lean_network,
    to_file_keys,
)

SHARELENS_FORMAT = "sharelens-hf/1"
# The sharelens fields of config.json; everything else there is the encoder's config.
SHARELENS_KEYS = ("sharelens_format", "spec_version", "motive_id2label", "motive_label2id", "tier_id2label",
                  "tier_label2id", "pooling", "head_dropout", "context_sizes", "context_features")
_NOT_ENCODER = (*SHARELENS_KEYS, "model_type", "auto_map", "architectures", "id2label", "label2id",
                "transformers_version", "_name_or_path", "encoder_model_type")
# Bundle file names -> in-memory names: every tensor that is not a head's gets `encoder.` in front
# (an empty match at the start of the key, replaced by the prefix).
_HEADS_RE = "|".join([*(p.replace(".", r"\.") for p in HEAD_PREFIXES), *(n + "$" for n in HEAD_NAMES)])
KEY_MAPPING = {f"^(?!{_HEADS_RE})": ENCODER_PREFIX}
OLD_LAYOUT = ("{path} is not a Hugging Face-native sharelens bundle (its config.json has no sharelens fields: "
              "a sharelens-bundle/1 folder, or not a sharelens bundle). sharelens itself still loads and serves "
              "such bundles (sharelens.bundle.load_model); to load it with transformers, write a converted copy "
              "with `python -m training.cli convert --version <version>` (or `--bundle <folder> --out <folder>`).")


def _id2label(doc: dict | list | tuple | None, default: tuple[str, ...]) -> dict[int, str]:
    if doc is None:
        return dict(enumerate(default))
    if isinstance(doc, (list, tuple)):
        return dict(enumerate(doc))
    return {int(k): str(v) for k, v in sorted(doc.items(), key=lambda kv: int(kv[0]))}


class ShareLensConfig(PretrainedConfig):
    """The encoder's config (its fields at the top level, its `model_type` in config.json) plus
    the sharelens fields: both heads' labels, pooling, head dropout and the tier head's context
    features (`context_sizes`: categories per slot; `context_features`: the whole encoder of
    `sharelens.context_features`, channel vocabulary and buckets, or None for a text-only model).
    The standard `id2label` / `label2id` are the motive head's."""

    model_type = "bert"  # the class default; an instance writes its encoder's model_type

    def __init__(self, motive_id2label: dict | list | None = None, tier_id2label: dict | list | None = None,
                 pooling: str = "mean", head_dropout: float = 0.1, context_sizes: list[int] | None = None,
                 context_features: dict[str, Any] | None = None, spec_version: str = SPEC_VERSION,
                 sharelens_format: str = SHARELENS_FORMAT, encoder_model_type: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("motive_label2id", None)
        kwargs.pop("tier_label2id", None)
        self.encoder_model_type = encoder_model_type or kwargs.pop("model_type", None) or type(self).model_type
        kwargs.pop("model_type", None)
        if pooling != "mean":
            raise ValueError(f"pooling {pooling!r} is not supported (sharelens mean-pools)")
        self.sharelens_format = sharelens_format
        self.spec_version = spec_version
        self.motive_id2label = _id2label(motive_id2label, MOTIVES)
        self.motive_label2id = {v: k for k, v in self.motive_id2label.items()}
        self.tier_id2label = _id2label(tier_id2label, TIERS)
        self.tier_label2id = {v: k for k, v in self.tier_id2label.items()}
        if len(self.tier_id2label) < 2:
            raise ValueError("the tier head needs at least two tiers")
        self.pooling = pooling
        self.head_dropout = float(head_dropout)
        self.context_sizes = [int(n) for n in context_sizes] if context_sizes else None
        self.context_features = context_features
        if context_features is not None and list(context_features.get("sizes", [])) != self.context_sizes:
            raise ValueError("context_features['sizes'] must equal context_sizes")
        kwargs["id2label"] = dict(self.motive_id2label)
        kwargs["label2id"] = dict(self.motive_label2id)
        super().__init__(**kwargs)

    @classmethod
    def from_encoder_config(cls, encoder_config: PretrainedConfig, **kwargs: Any) -> ShareLensConfig:
        doc = {k: v for k, v in encoder_config.to_dict().items() if k not in _NOT_ENCODER}
        return cls(encoder_model_type=encoder_config.model_type, **doc, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> ShareLensConfig:
        if "sharelens_format" not in config_dict:
            raise ValueError(OLD_LAYOUT.format(path=config_dict.get("_name_or_path") or "this config"))
        if config_dict["sharelens_format"] != SHARELENS_FORMAT:
            raise ValueError(f"sharelens_format {config_dict['sharelens_format']!r}: this code reads "
                             f"{SHARELENS_FORMAT}; upgrade sharelens")
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["model_type"] = out.pop("encoder_model_type", None) or type(self).model_type
        return out

    def encoder_config(self) -> PretrainedConfig:
        """The encoder's own transformers config (BertConfig for a BERT encoder)."""
        from transformers import AutoConfig

        doc = {k: v for k, v in self.to_dict().items() if k not in _NOT_ENCODER}
        return AutoConfig.for_model(self.encoder_model_type, **doc)


class ShareLensModel(ShareLensHeads, PreTrainedModel):
    """Encoder + motive head + ordinal tier head (+ context fusion). `forward` returns a dict with
    `motive_logits` (batch, motives), `tier_logits` (batch, tiers - 1; CORAL's P(tier > k)) and,
    given `motive_label` / `tier_label`, `loss`; `pool` and `heads` are its two halves."""

    config_class = ShareLensConfig
    main_input_name = "input_ids"
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)position_ids$"]

    def __init__(self, config: ShareLensConfig, encoder: nn.Module | None = None) -> None:
        super().__init__(config)
        if encoder is None:
            from transformers import AutoModel

            encoder = AutoModel.from_config(config.encoder_config(), add_pooling_layer=False)
        self.encoder = encoder
        self._build_heads(encoder.config.hidden_size, len(config.motive_id2label), len(config.tier_id2label),
                          dropout=config.head_dropout, context_sizes=config.context_sizes, pooling=config.pooling)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is self:
            init.copy_(self.tier_bias, initial_tier_bias(len(self.config.tier_id2label)).to(self.tier_bias))
            init.ones_(self.motive_class_weight)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            module.reset_parameters()  # torch's initialisation, what the heads always had

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_encoder(cls, name_or_path: str, keep_layers: int | None = None, dropout: float = 0.1,
                     context_sizes: list[int] | None = None, **kwargs: Any) -> ShareLensModel:
        """Start from pretrained encoder weights (local folder or hub id); new heads."""
        from transformers import AutoConfig, AutoModel

        enc_config = AutoConfig.from_pretrained(name_or_path, **kwargs)
        if keep_layers is not None and keep_layers < enc_config.num_hidden_layers:
            enc_config.num_hidden_layers = keep_layers  # the first k layers; the rest are not loaded
        encoder = AutoModel.from_pretrained(name_or_path, config=enc_config, add_pooling_layer=False, **kwargs)
        config = ShareLensConfig.from_encoder_config(encoder.config, head_dropout=dropout,
                                                     context_sizes=context_sizes)
        return cls(config, encoder=encoder)

    @classmethod
    def from_config(cls, encoder_config: PretrainedConfig, dropout: float = 0.1,
                    context_sizes: list[int] | None = None) -> ShareLensModel:
        """An untrained network with the given encoder shape (weights come from a bundle). A
        `ShareLensConfig` is taken as it is."""
        if isinstance(encoder_config, ShareLensConfig):
            return cls(encoder_config)
        return cls(ShareLensConfig.from_encoder_config(encoder_config, head_dropout=dropout,
                                                       context_sizes=context_sizes))

    @classmethod
    def lean_from_config(cls, config: dict[str, Any], context_sizes: list[int] | None = None) -> nn.Module:
        """The same network on `sharelens.lean_bert` (plain torch: inference and gradients)."""
        return lean_network(config, context_sizes=context_sizes)

    # -- Hugging Face folders ----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):  # noqa: ANN001, ANN206
        """transformers' loader, reading the bundle's file names (`sharelens.network.to_file_keys`)."""
        kwargs.setdefault("key_mapping", KEY_MAPPING)
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model._weight_conversions = None  # save_pretrained writes the file names itself
        return model

    def save_pretrained(self, save_directory, state_dict: dict[str, torch.Tensor] | None = None,  # noqa: ANN001
                        **kwargs: Any) -> None:
        """transformers' writer with the bundle's file names: the encoder's tensors under its own
        names (what `AutoModel.from_pretrained` of the encoder reads), the heads' as they are."""
        state = self.state_dict() if state_dict is None else state_dict
        own = self.state_dict().keys()
        if all(k in own for k in state):  # in-memory names (not already the file's)
            state = to_file_keys(dict(state))
        kwargs["save_original_format"] = False
        super().save_pretrained(save_directory, state_dict=state, **kwargs)


ShareLensConfig.register_for_auto_class()
ShareLensModel.register_for_auto_class("AutoModel")
