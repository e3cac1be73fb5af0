"""`training.experiments.motive_layers.hidden_states` reads every layer of both runtimes alike: the
lean encoder has no `output_hidden_states`, so the experiment runs its layers one by one, and that
loop must give what transformers gives (or the layer table compares two different encoders)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sharelens.lean_bert import LeanBertConfig, LeanBertModel
from training.experiments.motive_layers import hidden_states


def test_lean_layer_loop_matches_transformers_hidden_states(tiny_encoder_dir: Path, real_posts: list[str]) -> None:
    from transformers import AutoModel, AutoTokenizer

    reference = AutoModel.from_pretrained(tiny_encoder_dir, add_pooling_layer=False).eval()
    lean = LeanBertModel(LeanBertConfig.from_dict(json.loads((tiny_encoder_dir / "config.json").read_text()))).eval()
    lean.load_state_dict(reference.state_dict(), strict=False)
    batch = AutoTokenizer.from_pretrained(tiny_encoder_dir)(real_posts[:8], padding=True, truncation=True,
                                                             max_length=64, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any()  # padding is exercised
    with torch.no_grad():
        ours, theirs = hidden_states(lean, ids, mask), hidden_states(reference, ids, mask)
        last = lean(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(ours) == len(theirs) == reference.config.num_hidden_layers + 1
    keep = mask.bool()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a[keep], b[keep], atol=1e-5), (a - b).abs().max()
    assert torch.equal(ours[-1], last)
