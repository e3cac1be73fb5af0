"""The network: the ordinal head's decision rule, and the Hugging Face model (ShareLensModel) —
save_pretrained / from_pretrained, the Auto classes with and without trust_remote_code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sharelens.labels import MOTIVES, TIERS
from sharelens.modeling import IGNORE, median_tier, tier_probs_from_logits


def test_median_tier_is_the_lowest_tier_reaching_half_the_mass() -> None:
    probs = np.array([[0.4, 0.05, 0.05, 0.5],   # argmax says viral, the median says high
                      [0.5, 0.5, 0.0, 0.0],     # exactly half: the lower tier
                      [0.1, 0.2, 0.3, 0.4],
                      [0.0, 0.0, 0.0, 1.0]])
    assert median_tier(probs).tolist() == [2, 0, 2, 3]
    assert int(median_tier(probs[0])) == 2


def test_median_tier_equals_coral_threshold_counting() -> None:
    """Under the ordinal head, the median is CORAL's rule: how many P(tier > k) exceed 0.5."""
    logits = torch.randn(500, 3) * 3
    probs = tier_probs_from_logits(logits).numpy()
    counted = (torch.cummin(torch.sigmoid(logits), dim=-1).values > 0.5).sum(-1).numpy()
    assert (median_tier(probs) == counted).mean() > 0.99  # float ties at exactly 0.5 aside


# -- the Hugging Face model (sharelens.modeling_sharelens) ------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tiny_encoder_dir: Path):
    from sharelens.modeling import ShareLensModel

    torch.manual_seed(3)
    model = ShareLensModel.from_encoder(str(tiny_encoder_dir), context_sizes=[4, 3, 5])
    with torch.no_grad():  # heads away from their initial values, so that a reload that drops them shows
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-sharelens"
    tiny_model.save_pretrained(folder)
    return folder


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[0, 0] = ids[1, 0] = ids[2, 0] = 2
    return {"input_ids": ids * mask, "attention_mask": mask,
            "context_ids": torch.tensor([[1, 2, 3], [0, 0, 0], [3, 1, 4]])}


def _outputs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(**batch)
    return out["motive_logits"], out["tier_logits"]


def test_model_is_a_pretrained_model_with_the_old_interface(tiny_model) -> None:
    from transformers import PreTrainedModel

    from sharelens.modeling import HeadOutputs, ShareLensConfig

    assert isinstance(tiny_model, PreTrainedModel) and isinstance(tiny_model.config, ShareLensConfig)
    assert tiny_model.config.motive_id2label == dict(enumerate(MOTIVES))
    assert tiny_model.config.tier_label2id == {t: i for i, t in enumerate(TIERS)}
    assert tiny_model.config.id2label == dict(enumerate(MOTIVES))  # the standard field: the motive head's
    assert tiny_model.config.pooling == "mean" and tiny_model.config.context_sizes == [4, 3, 5]
    b = _batch()
    pooled = tiny_model.pool(b["input_ids"], b["attention_mask"])
    out = tiny_model.heads(pooled, b["context_ids"])
    assert isinstance(out, HeadOutputs) and out.motive_logits.shape == (3, len(MOTIVES))
    assert out.tier_logits.shape == (3, len(TIERS) - 1) and tiny_model.context_slots == 3
    assert torch.equal(out.motive_logits, _outputs(tiny_model, b)[0])
    loss = tiny_model.loss(out, torch.tensor([1, IGNORE, 2]), torch.tensor([0, 3, IGNORE]))
    assert loss.ndim == 0 and loss > 0
    assert tiny_model.encoder.config.model_type == "bert"


def test_from_encoder_keeps_the_pretrained_weights_and_starts_the_heads_as_before(tiny_encoder_dir: Path) -> None:
    from transformers import AutoModel

    from sharelens.modeling import ShareLensModel

    base = AutoModel.from_pretrained(str(tiny_encoder_dir), add_pooling_layer=False)
    model = ShareLensModel.from_encoder(str(tiny_encoder_dir), keep_layers=1)
    assert model.encoder.config.num_hidden_layers == 1 and model.config.num_hidden_layers == 1
    mine = model.encoder.state_dict()
    for k, v in mine.items():
        assert torch.equal(v, base.state_dict()[k]), k
    assert model.tier_bias.tolist() == [1.0, 0.0, -1.0]
    assert model.motive_class_weight.tolist() == [1.0] * len(MOTIVES)
    assert model.context is None and model.config.context_sizes is None


def test_save_pretrained_from_pretrained_round_trip(tiny_model, saved: Path) -> None:
    from sharelens.modeling import ShareLensModel

    again = ShareLensModel.from_pretrained(saved).eval()
    b = _batch(1)
    for x, y in zip(_outputs(tiny_model, b), _outputs(again, b), strict=True):
        assert torch.equal(x, y)
    ref = tiny_model.state_dict()
    assert again.state_dict().keys() == ref.keys()
    for k, v in again.state_dict().items():
        assert torch.equal(v, ref[k]), k
    def fields(config) -> dict:
        return {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "architectures")}

    assert fields(again.config) == fields(tiny_model.config)
    # the network's code travels with it; config.json is the encoder's config plus the sharelens fields
    assert {"modeling_sharelens.py", "network.py", "labels.py", "config.json", "model.safetensors"} <= {
        p.name for p in saved.iterdir()}
    doc = json.loads((saved / "config.json").read_text())
    assert doc["model_type"] == "bert" and doc["auto_map"] == {
        "AutoConfig": "modeling_sharelens.ShareLensConfig", "AutoModel": "modeling_sharelens.ShareLensModel"}
    assert doc["tier_id2label"] == {str(i): t for i, t in enumerate(TIERS)}


def test_the_file_names_the_encoder_tensors_as_the_encoder_does(tiny_model, saved: Path) -> None:
    from safetensors.torch import load_file

    from sharelens.modeling import from_file_keys, to_file_keys

    on_file = load_file(str(saved / "model.safetensors"))
    assert "embeddings.word_embeddings.weight" in on_file and "encoder.layer.0.attention.self.query.weight" in on_file
    assert {"motive_head.weight", "tier_proj.weight", "tier_bias", "context.text.weight"} <= on_file.keys()
    assert from_file_keys(on_file).keys() == tiny_model.state_dict().keys()
    assert to_file_keys(tiny_model.state_dict()).keys() == on_file.keys()
    # what the HF Trainer does with its checkpoints (load_state_dict of a save_pretrained file): accepted
    fresh = type(tiny_model)(tiny_model.config).eval()
    fresh.load_state_dict(on_file, strict=True)
    for x, y in zip(_outputs(tiny_model, _batch(2)), _outputs(fresh, _batch(2)), strict=True):
        assert torch.equal(x, y)


def test_auto_classes_with_trust_remote_code_load_both_heads(tiny_model, saved: Path) -> None:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(saved, trust_remote_code=True)
    assert type(config).__name__ == "ShareLensConfig"
    assert config.motive_id2label == dict(enumerate(MOTIVES)) and config.tier_id2label == dict(enumerate(TIERS))
    assert config.context_sizes == [4, 3, 5]
    model = AutoModel.from_pretrained(saved, trust_remote_code=True).eval()
    # the class comes from the folder's own copy of the code, not from this sharelens
    assert type(model).__name__ == "ShareLensModel" and type(model) is not type(tiny_model)
    assert type(model).__module__.startswith("transformers_modules.")
    for batch in (_batch(3), {k: v for k, v in _batch(3).items() if k != "context_ids"}):
        for x, y in zip(_outputs(tiny_model, batch), _outputs(model, batch), strict=True):
            assert torch.equal(x, y)


def test_plain_auto_model_loads_the_encoder_with_its_weights(tiny_model, saved: Path) -> None:
    """Without trust_remote_code: the fine-tuned encoder, never random weights in its place."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    assert type(AutoConfig.from_pretrained(saved)) is BertConfig
    encoder, info = AutoModel.from_pretrained(saved, add_pooling_layer=False, output_loading_info=True)
    assert type(encoder) is BertModel and not info["missing_keys"] and not info["mismatched_keys"]
    assert set(info["unexpected_keys"]) == {k for k in tiny_model.state_dict() if not k.startswith("encoder.")}
    b = _batch(4)
    with torch.no_grad():
        h = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        assert torch.equal((h * mask).sum(1) / mask.sum(1), tiny_model.pool(b["input_ids"], b["attention_mask"]))
    # with transformers' default pooler (not part of sharelens): only the pooler is new, and reported
    _, info = AutoModel.from_pretrained(saved, output_loading_info=True)
    assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}


def test_an_old_layout_bundle_is_refused_by_from_pretrained_with_the_conversion(legacy_bundle: Path) -> None:
    from sharelens.modeling import ShareLensModel

    with pytest.raises(ValueError, match=r"training\.cli convert"):
        ShareLensModel.from_pretrained(legacy_bundle)


def test_config_fields_are_checked_and_rebuild_the_encoder_config(tiny_encoder_dir: Path) -> None:
    from transformers import AutoConfig

    from sharelens.modeling import ShareLensConfig

    enc = AutoConfig.from_pretrained(str(tiny_encoder_dir))
    cfg = ShareLensConfig.from_encoder_config(enc, context_sizes=[2, 3])
    rebuilt = cfg.encoder_config()
    assert type(rebuilt) is type(enc)
    skip = {"architectures", "transformers_version", "use_cache", "_name_or_path"}
    assert {k: v for k, v in rebuilt.to_dict().items() if k not in skip} == {
        k: v for k, v in enc.to_dict().items() if k not in skip}
    with pytest.raises(ValueError, match="pooling"):
        ShareLensConfig.from_encoder_config(enc, pooling="cls")
    with pytest.raises(ValueError, match="context_sizes"):
        ShareLensConfig.from_encoder_config(enc, context_sizes=[2, 3], context_features={"sizes": [2, 4]})
