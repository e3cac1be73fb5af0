"""The lean runtime (plain torch + tokenizers) computes what transformers computes, on the same
bundle, and keeps transformers out of a serving process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharelens.bundle import choose_runtime, load_model, verify_bundle
from sharelens.errors import SharelensError
from sharelens.lean_bert import LeanBertConfig, LeanBertModel, unsupported
from sharelens.lean_tokenizer import FastTokenizer
from sharelens.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tiny_encoder_dir: Path):
    """transformers' BertModel and a LeanBertModel holding the same (random) weights."""
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(tiny_encoder_dir, add_pooling_layer=False).eval()
    config = json.loads((tiny_encoder_dir / "config.json").read_text())
    lean = LeanBertModel(LeanBertConfig.from_dict(config)).eval()
    lean.load_state_dict(reference.state_dict(), strict=False)
    missing = set(lean.state_dict()) ^ {k for k in reference.state_dict() if k in lean.state_dict()}
    assert not missing
    return reference, lean


def test_parameters_have_transformers_names(pair) -> None:
    reference, lean = pair
    assert set(lean.state_dict()) == set(reference.state_dict()) - {"embeddings.position_ids",
                                                                      "embeddings.token_type_ids"}


def test_hidden_states_match_on_a_padded_batch(pair, tiny_encoder_dir: Path, real_posts: list[str]) -> None:
    from transformers import AutoTokenizer

    reference, lean = pair
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    batch = tok(real_posts[:12], padding=True, truncation=True, max_length=96, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padding is exercised
    with torch.no_grad():
        a = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        b = lean(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["attention_mask"].bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5), (a - b).abs().max()


def test_gradients_through_inputs_embeds_match(pair) -> None:
    """Integrated Gradients differentiates the encoder through inputs_embeds."""
    reference, lean = pair
    torch.manual_seed(0)
    x = torch.randn(3, 9, reference.config.hidden_size)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    grads = []
    for model in (reference, lean):
        inp = x.clone().requires_grad_(True)
        out = model(inputs_embeds=inp, attention_mask=mask).last_hidden_state
        (out * mask.unsqueeze(-1)).sum().backward()
        grads.append(inp.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_fast_tokenizer_matches_transformers(tiny_bundle: Path, real_posts: list[str]) -> None:
    from transformers import AutoTokenizer

    ours, theirs = FastTokenizer.from_folder(tiny_bundle), AutoTokenizer.from_pretrained(tiny_bundle)
    texts = real_posts[:200]
    kw = {"truncation": True, "max_length": 64, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    a, b = ours(texts, **kw), theirs(texts, **kw)
    assert any(len(x) == 64 for x in a["input_ids"])  # truncation is exercised
    for key in ("input_ids", "attention_mask", "special_tokens_mask"):
        assert a[key] == [list(x) for x in b[key]], key
    assert [[tuple(o) for o in x] for x in a["offset_mapping"]] == [[tuple(o) for o in x] for x in b["offset_mapping"]]
    inner_a = ours(texts, add_special_tokens=False)["input_ids"]
    assert inner_a == [list(x) for x in theirs(texts, add_special_tokens=False)["input_ids"]]
    pa = ours(texts[:5], padding=True, truncation=True, max_length=64, return_tensors="pt")
    pb = theirs(texts[:5], padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert torch.equal(pa["input_ids"], pb["input_ids"]) and torch.equal(pa["attention_mask"], pb["attention_mask"])
    assert ours.pad_token_id == theirs.pad_token_id
    single = ours(texts[0], truncation=True, max_length=64)
    assert single["input_ids"] == a["input_ids"][0]


def test_fast_tokenizer_refuses_what_it_does_not_do(tiny_bundle: Path) -> None:
    tok = FastTokenizer.from_folder(tiny_bundle)
    with pytest.raises(TypeError, match="stride"):
        tok("转发", stride=4)
    with pytest.raises(TypeError, match="max_length"):
        tok(["转发", "微博"], padding="max_length")


def test_truncation_settings_do_not_leak_between_calls(tiny_bundle: Path, real_posts: list[str]) -> None:
    tok = FastTokenizer.from_folder(tiny_bundle)
    long = max(real_posts[:300], key=len)
    full = len(tok(long)["input_ids"])
    assert full > 40
    assert len(tok(long, truncation=True, max_length=16)["input_ids"]) == 16
    assert len(tok(long)["input_ids"]) == full  # the untruncated backend was not reconfigured


def test_predictor_defaults_to_lean_and_agrees_with_transformers(tiny_bundle: Path, real_posts: list[str]) -> None:
    lean = Predictor.from_bundle(tiny_bundle)
    reference = Predictor.from_bundle(tiny_bundle, runtime="transformers")
    assert (lean.runtime, reference.runtime) == ("lean", "transformers")
    texts = real_posts[:40]
    a, b = lean.predict(texts), reference.predict(texts)
    assert np.allclose([p.motive_probs for p in a], [p.motive_probs for p in b], atol=1e-6)
    assert np.allclose([p.tier_probs for p in a], [p.tier_probs for p in b], atol=1e-6)
    assert [p.n_tokens for p in a] == [p.n_tokens for p in b]


def test_unsupported_architectures_fall_back_or_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    assert unsupported({"model_type": "roberta"}) == "model_type 'roberta' is not bert"
    copy = tmp_path / tiny_bundle.name
    shutil.copytree(tiny_bundle, copy)
    config = json.loads((copy / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (copy / "config.json").write_text(json.dumps(config))
    info = verify_bundle(copy)
    assert choose_runtime(info, "auto") == "transformers"
    with pytest.raises(SharelensError, match="E219.*relative_key"):
        load_model(info, runtime="lean")
    with pytest.raises(SharelensError, match="E252.*unknown runtime"):
        choose_runtime(info, "onnx")


def test_a_serving_process_never_imports_transformers(tiny_bundle: Path) -> None:
    code = ("import sys; import serving.main; from sharelens.predictor import Predictor; "
            f"p = Predictor.from_bundle({str(tiny_bundle)!r}); p.predict(['转发这条微博']); "
            "from sharelens.explain import explain_text; "
            "explain_text(p.model, p.tokenizer, '转发这条微博', p.max_length, steps=2); "
            "print(p.runtime, sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["lean", "[]"]
