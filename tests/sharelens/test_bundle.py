import json
import shutil
from pathlib import Path

import pytest

from sharelens.bundle import verify_bundle
from sharelens.errors import SharelensError
from sharelens.predictor import Predictor


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "sharelens" / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_round_trip_predicts_the_same(tiny_bundle: Path, tmp_path: Path, real_posts: list[str]) -> None:
    a = Predictor.from_bundle(tiny_bundle)
    b = Predictor.from_bundle(_copy(tiny_bundle, tmp_path))
    pa, pb = a.predict(real_posts[:8]), b.predict(real_posts[:8])
    for x, y in zip(pa, pb, strict=True):
        assert x.motive_probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert x.tier_probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert (abs(x.motive_probs - y.motive_probs).max()) < 1e-6


def test_corrupt_weights_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    w = b / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(SharelensError) as e:
        verify_bundle(b)
    assert e.value.code == "E216"


def test_missing_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    (b / "labels.json").unlink()
    with pytest.raises(SharelensError, match="incomplete") as e:
        verify_bundle(b)
    assert e.value.code == "E211"


def test_label_set_mismatch_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    doc = json.loads((b / "labels.json").read_text())
    doc["motive_id2label"]["0"] = "bribery"
    (b / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(SharelensError) as e:
        verify_bundle(b)
    assert e.value.code == "E214"


def test_incompatible_library_version_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    doc = json.loads((b / "bundle.json").read_text())
    doc["library_versions"]["transformers"] = "3.0.0"
    (b / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(SharelensError) as e:
        verify_bundle(b)
    assert e.value.code == "E215"


def test_truncated_weights_fail_to_load_with_message(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    w = b / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(SharelensError) as e:
        Predictor.from_bundle(b, check_hash=False)
    assert e.value.code == "E217"
    assert "retrain" in e.value.message


@pytest.mark.parametrize("content", [b"{", b'{"motive_temperature": "\xff"}', b"[1.5]", b'"1.5"',
                                     b'{"motive_temperature": "hot"}', b'{"motive_temperature": true}',
                                     b'{"tier_temperature": 0}', b'{"tier_temperature": -2}',
                                     b'{"motive_temperature": 1e999}', b'{"motive_temperature": NaN}'])
def test_damaged_calibration_is_refused(tiny_bundle: Path, tmp_path: Path, content: bytes) -> None:
    b = _copy(tiny_bundle, tmp_path)
    (b / "calibration.json").write_bytes(content)
    with pytest.raises(SharelensError) as e:
        verify_bundle(b, check_hash=False)
    assert e.value.code == "E250"
    assert "calibration.json" in e.value.message and "make eval" in e.value.message


def test_fitted_calibration_is_read(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    (b / "calibration.json").write_text('{"motive_temperature": 1.5, "tier_temperature": 2, "fitted_on": "validation"}')
    info = verify_bundle(b, check_hash=False)
    assert info.calibration == {"motive_temperature": 1.5, "tier_temperature": 2.0, "fitted_on": "validation"}


@pytest.mark.parametrize(("name", "content"), [("bundle.json", b'{"format": "\xff"}'), ("labels.json", b"\xfe"),
                                               ("bundle.json", b"[]")])
def test_unreadable_metadata_is_refused(tiny_bundle: Path, tmp_path: Path, name: str, content: bytes) -> None:
    b = _copy(tiny_bundle, tmp_path)
    (b / name).write_bytes(content)
    with pytest.raises(SharelensError) as e:
        verify_bundle(b, check_hash=False)
    assert e.value.code == "E212"


# -- formats: Hugging Face-native bundles (2), and the old layout of v0001..v0003 (1) ----------------
def test_bundles_are_written_hugging_face_native(tiny_bundle: Path, real_posts: list[str]) -> None:
    import torch
    from transformers import AutoModel

    from sharelens.bundle import BUNDLE_FORMAT
    from sharelens.context_features import ContextFeatures

    info = verify_bundle(tiny_bundle)
    assert info.format == BUNDLE_FORMAT and info.hf_native
    assert {"modeling_sharelens.py", "network.py", "labels.py"} <= {p.name for p in tiny_bundle.iterdir()}
    config = json.loads((tiny_bundle / "config.json").read_text())
    features = ContextFeatures.load(tiny_bundle)
    assert config["context_features"] == json.loads(json.dumps(features.to_dict()))
    assert ContextFeatures.from_dict(config["context_features"]) == features
    assert config["motive_id2label"] == json.loads((tiny_bundle / "labels.json").read_text())["motive_id2label"]
    # what sharelens serves is what transformers loads from the folder with its own code
    pred = Predictor.from_bundle(tiny_bundle)
    hf = AutoModel.from_pretrained(tiny_bundle, trust_remote_code=True).eval()
    enc = pred.encode(real_posts[:6])
    with torch.no_grad():
        a = pred.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        b = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert torch.allclose(a["motive_logits"], b["motive_logits"], atol=1e-5)
    assert torch.allclose(a["tier_logits"], b["tier_logits"], atol=1e-5)


@pytest.mark.parametrize("runtime", ["lean", "transformers"])
def test_old_layout_bundles_still_load(legacy_bundle: Path, tiny_bundle: Path, runtime: str,
                                       real_posts: list[str]) -> None:
    from sharelens.bundle import LEGACY_FORMAT

    info = verify_bundle(legacy_bundle)
    assert info.format == LEGACY_FORMAT and not info.hf_native
    old = Predictor.from_bundle(legacy_bundle, runtime=runtime)
    new = Predictor.from_bundle(tiny_bundle, runtime=runtime)
    assert old.runtime == runtime
    for x, y in zip(old.predict(real_posts[:8]), new.predict(real_posts[:8]), strict=True):
        assert abs(x.motive_probs - y.motive_probs).max() < 1e-6
        assert abs(x.tier_probs - y.tier_probs).max() < 1e-6


def test_unknown_bundle_format_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    doc = json.loads((b / "bundle.json").read_text())
    doc["format"] = "sharelens-bundle/9"
    (b / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(SharelensError, match="sharelens-bundle/1 and sharelens-bundle/2") as e:
        verify_bundle(b, check_hash=False)
    assert e.value.code == "E213"


def test_config_context_that_contradicts_context_json_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    from sharelens.bundle import load_model

    b = _copy(tiny_bundle, tmp_path)
    doc = json.loads((b / "config.json").read_text())
    doc["context_sizes"] = doc["context_sizes"][:-1]
    (b / "config.json").write_text(json.dumps(doc))
    with pytest.raises(SharelensError) as e:
        load_model(verify_bundle(b))
    assert e.value.code == "E251"
