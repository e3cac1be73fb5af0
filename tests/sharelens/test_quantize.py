"""The int8 backend: export and load round trip, closeness to fp32 on real posts, refusal of a
missing, corrupt, stale or foreign export, and the one-pass tokenisation of the hot path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sharelens.bundle import load_model, verify_bundle
from sharelens.errors import SharelensError
from sharelens.predictor import Predictor
from sharelens.quantize import (
    INT8_DIR,
    INT8_WEIGHTS,
    MANIFEST,
    activation_maxima,
    export_int8,
    full_range_activations,
    quantizable_linears,
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is fastest on one thread, and CI shares its cores
    yield
    torch.set_num_threads(before)


def _copy(bundle: Path, root: Path) -> Path:
    dst = root / "sharelens" / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def _export(bundle: Path, texts: list[str]) -> Path:
    info = verify_bundle(bundle)
    pred = Predictor.from_bundle(bundle)
    act_max = activation_maxima(pred.model, lambda: pred.logits(texts, batch_size=1))
    return export_int8(info, pred.model, act_max, calibration={"posts": len(texts)})


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory, real_posts: list[str]) -> Path:
    """A copy of the tiny bundle with an int8 export calibrated on other posts than the tests use."""
    bundle = _copy(tiny_bundle, tmp_path_factory.mktemp("int8"))
    _export(bundle, real_posts[-128:])
    return bundle


def test_export_writes_weights_and_manifest(int8_bundle: Path) -> None:
    folder = int8_bundle / INT8_DIR
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "sharelens-int8/1"
    assert manifest["source_weights_sha256"] == json.loads((int8_bundle / "bundle.json").read_text())["files"][
        "model.safetensors"]
    from sharelens.bundle import sha256_file

    assert manifest["files"][INT8_WEIGHTS] == sha256_file(folder / INT8_WEIGHTS)
    assert manifest["smoothing"]["method"] == "SmoothQuant"
    assert not list(int8_bundle.glob(".int8*")), "no partial or old export is left behind"


def test_int8_round_trip_loads_quantised_layers(int8_bundle: Path, real_posts: list[str]) -> None:
    from sharelens.quantize import _int8_linear_class

    pred = Predictor.from_bundle(int8_bundle, backend="int8")
    assert pred.backend == "int8" and pred.infer_model is not pred.model
    int8_cls = _int8_linear_class().__mro__[1]  # torch's dynamic Linear
    quantised = [n for n, m in pred.infer_model.named_modules() if isinstance(m, int8_cls)]
    assert sorted(quantised) == sorted(quantizable_linears(pred.model))
    # the fp32 network (explanations differentiate it) is untouched, and shares its other tensors
    assert all(isinstance(pred.model.get_submodule(n), torch.nn.Linear) for n in quantised)
    emb = pred.model.encoder.get_input_embeddings().weight
    assert pred.infer_model.encoder.get_input_embeddings().weight.data_ptr() == emb.data_ptr()
    # loading twice gives the same numbers: what is stored is what is served
    again = Predictor.from_bundle(int8_bundle, backend="int8")
    a, b = pred.predict(real_posts[:16]), again.predict(real_posts[:16])
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.motive_probs, y.motive_probs) and np.array_equal(x.tier_probs, y.tier_probs)
        assert x.motive_probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_int8_predictions_are_close_to_fp32(int8_bundle: Path, real_posts: list[str]) -> None:
    """Tolerance, from the quantisation error: int8 weights per output channel are off by at most
    1/254 of the channel's range, 8-bit activations by 1/510 of the tensor's (SmoothQuant keeps
    outlier channels from widening it), so each of the tiny model's 2 layers adds well under 1%
    relative error. Its motive logits spread about 0.4, so a logit moves by < 0.4 * 1% * 2 layers
    = 0.008 and a probability (d softmax <= 1/4 per unit of two logits) by < 0.004: the test
    allows 0.0025 (measured: 6e-5), a mean of 2.5e-4 and 97% top-motive agreement. A broken
    export (wrong scales, a saturating kernel, a layer left out of the swap) is off by 0.05+.
    The trained fast model, whose logits spread far more, agrees with fp32 on 98% of the test
    posts with a mean |dp| of 0.003 (its int8/accuracy.json)."""
    texts = real_posts[:200]
    fp32 = Predictor.from_bundle(int8_bundle)
    int8 = Predictor.from_bundle(int8_bundle, backend="int8")
    p0, p1 = fp32.predict(texts), int8.predict(texts)
    m0 = np.stack([p.motive_probs for p in p0])
    m1 = np.stack([p.motive_probs for p in p1])
    t0 = np.stack([p.tier_probs for p in p0])
    t1 = np.stack([p.tier_probs for p in p1])
    assert np.abs(m1 - m0).max() < 0.0025 and np.abs(t1 - t0).max() < 0.0025
    assert np.abs(m1 - m0).mean() < 2.5e-4
    assert (m0.argmax(1) == m1.argmax(1)).mean() >= 0.97
    assert not np.array_equal(m0, m1), "the int8 path really ran"
    assert [p.n_tokens for p in p0] == [p.n_tokens for p in p1]
    assert [p.truncated for p in p0] == [p.truncated for p in p1]


def test_export_without_calibration_loads_too(tiny_bundle: Path, tmp_path: Path, real_posts: list[str]) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    info = verify_bundle(bundle)
    model, _ = load_model(info)
    export_int8(info, model)  # no SmoothQuant
    assert json.loads((bundle / INT8_DIR / MANIFEST).read_text())["smoothing"] is None
    pred = Predictor.from_bundle(bundle, backend="int8")
    assert len(pred.predict(real_posts[:4])) == 4


def test_missing_export_is_refused_with_the_command_to_run(tiny_bundle: Path) -> None:
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(tiny_bundle, backend="int8")
    assert e.value.code == "E241"
    assert "make quantize" in e.value.message and tiny_bundle.name in e.value.message


def test_corrupt_export_is_refused(int8_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(int8_bundle, tmp_path)
    w = bundle / INT8_DIR / INT8_WEIGHTS
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(bundle, backend="int8")
    assert e.value.code == "E242" and "make quantize" in e.value.message


def test_truncated_export_is_refused_even_without_hash_check(int8_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(int8_bundle, tmp_path)
    w = bundle / INT8_DIR / INT8_WEIGHTS
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(bundle, backend="int8", check_hash=False)
    assert e.value.code == "E249"


def test_stale_export_is_refused(int8_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(int8_bundle, tmp_path)
    m = bundle / INT8_DIR / MANIFEST
    doc = json.loads(m.read_text())
    doc["source_weights_sha256"] = "0" * 64  # made from other weights (the bundle was retrained)
    m.write_text(json.dumps(doc))
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(bundle, backend="int8")
    assert e.value.code == "E243"


def test_unreadable_manifest_and_missing_weights_are_refused(int8_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(int8_bundle, tmp_path)
    (bundle / INT8_DIR / MANIFEST).write_text("{not json")
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(bundle, backend="int8")
    assert e.value.code == "E248"
    (bundle / INT8_DIR / INT8_WEIGHTS).unlink()
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(bundle, backend="int8")
    assert e.value.code == "E241"


def test_unknown_backend_is_refused(tiny_bundle: Path) -> None:
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(tiny_bundle, backend="fp16")
    assert e.value.code == "E240"


def test_full_range_probe_answers() -> None:
    assert isinstance(full_range_activations(), bool)


def test_one_pass_tokenisation_matches_the_tokenizer(tiny_bundle: Path, real_posts: list[str]) -> None:
    """Predictor.tokenize (one pass) gives exactly the tokenizer's truncated ids and untruncated counts."""
    pred = Predictor.from_bundle(tiny_bundle)
    texts = [*real_posts[:300], "", " ", "转" * 1000]
    for window in (pred.max_length, 16, 3):
        pred.max_length = window
        ids, counts = pred.tokenize(texts)
        assert ids == [list(x) for x in pred.tokenizer(texts, truncation=True, max_length=window)["input_ids"]]
        assert counts == [len(x) for x in pred.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        assert any(c > window for c in counts)


def test_logits_match_the_reference_encoding(tiny_bundle: Path, real_posts: list[str]) -> None:
    pred = Predictor.from_bundle(tiny_bundle)
    texts = real_posts[:40]
    raw, counts = pred.logits(texts, batch_size=8)
    with torch.inference_mode():
        for i, text in enumerate(texts[:10]):
            enc = pred.encode([text])
            out = pred.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            assert np.allclose(out["motive_logits"].numpy()[0], raw.motive_logits[i], atol=1e-5)
            assert np.allclose(out["tier_logits"].numpy()[0], raw.tier_logits[i], atol=1e-5)
    assert pred.logits([])[1] == []
