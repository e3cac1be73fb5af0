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
