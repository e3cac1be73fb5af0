"""`sharelens convert`: an old-layout bundle (v0001..v0003) -> a Hugging Face-native copy that
serves the same probabilities, keeps a valid int8 export, and loads with the Auto classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sharelens.bundle import BUNDLE_FORMAT, LEGACY_FORMAT, WEIGHTS, sha256_file, verify_bundle
from sharelens.errors import SharelensError
from sharelens.predictor import Predictor
from sharelens.registry import Registry
from training.convert import convert_bundle


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def legacy_with_int8(legacy_bundle: Path, tmp_path_factory: pytest.TempPathFactory, real_posts: list[str]) -> Path:
    import shutil

    from sharelens.quantize import activation_maxima, export_int8

    bundle = tmp_path_factory.mktemp("legacy-int8") / "sharelens" / legacy_bundle.name
    shutil.copytree(legacy_bundle, bundle)
    pred = Predictor.from_bundle(bundle)
    act_max = activation_maxima(pred.model, lambda: pred.logits(real_posts[-32:], batch_size=1))
    export_int8(pred.info, pred.model, act_max, calibration={"posts": 32})
    return bundle


def test_convert_writes_a_hugging_face_native_copy_that_serves_the_same(legacy_with_int8: Path, tmp_path: Path,
                                                                        real_posts: list[str]) -> None:
    from transformers import AutoModel

    before = _hashes(legacy_with_int8)
    out = convert_bundle(legacy_with_int8, out=tmp_path / "converted")
    assert _hashes(legacy_with_int8) == before  # the source is never touched
    info = verify_bundle(out)
    assert info.format == BUNDLE_FORMAT and info.version == legacy_with_int8.name
    assert info.meta["converted_from"] == {"version": legacy_with_int8.name, "format": LEGACY_FORMAT,
                                           "weights_sha256": before[WEIGHTS]}
    assert (out / "README.md").read_text(encoding="utf-8").count("trust_remote_code=True") == 1
    texts = real_posts[:12]
    for backend in ("fp32", "int8"):  # the int8 export came along and is valid for the new file
        a = Predictor.from_bundle(legacy_with_int8, backend=backend).predict(texts)
        b = Predictor.from_bundle(out, backend=backend).predict(texts)
        for x, y in zip(a, b, strict=True):
            assert (x.motive_probs == y.motive_probs).all() and (x.tier_probs == y.tier_probs).all()
    reference = Predictor.from_bundle(legacy_with_int8, runtime="transformers")
    hf = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    enc = reference.encode(texts)
    with torch.no_grad():
        r = reference.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        h = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert torch.equal(r["motive_logits"], h["motive_logits"]) and torch.equal(r["tier_logits"], h["tier_logits"])
    with pytest.raises(SharelensError) as e:  # once is enough
        convert_bundle(out, out=tmp_path / "again")
    assert e.value.code == "E322"


def test_convert_registers_a_new_version_and_moves_no_alias(legacy_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from training.model_card import write_model_card

    root = tmp_path / "models"
    shutil.copytree(legacy_bundle, root / "sharelens" / legacy_bundle.name)
    card = write_model_card(root / "sharelens" / legacy_bundle.name).read_text(encoding="utf-8")
    reg = Registry(root)
    reg.register("sharelens", legacy_bundle.name, {"test_motive_macro_f1": 0.5})
    reg.set_alias("sharelens", "production", legacy_bundle.name)
    dest = convert_bundle(root / "sharelens" / legacy_bundle.name, models_dir=root)
    assert dest.parent == root / "sharelens" and dest.name != legacy_bundle.name
    assert reg.resolve("sharelens", "latest")[1] == dest
    assert reg.resolve("sharelens", "production")[0] == legacy_bundle.name
    entry = next(v for v in reg.entry("sharelens")["versions"] if v["version"] == dest.name)
    assert entry["summary"] == {"test_motive_macro_f1": 0.5, "converted_from": legacy_bundle.name}
    assert json.loads((dest / "bundle.json").read_text())["version"] == dest.name
    # the card keeps what was measured, under the new version, and says how transformers loads it
    new_card = (dest / "README.md").read_text(encoding="utf-8").split("\n")
    old_card = card.replace(f"# sharelens {legacy_bundle.name}\n", f"# sharelens {dest.name}\n").split("\n")
    extra = [line for line in new_card if line not in old_card]
    assert len(new_card) == len(old_card) + 1 and len(extra) == 1 and "trust_remote_code=True" in extra[0]


def test_convert_command_line(legacy_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    assert main(["convert", "--bundle", str(legacy_bundle), "--out", str(tmp_path / "hf")]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    assert verify_bundle(tmp_path / "hf").hf_native
    assert main(["convert", "--bundle", str(tmp_path / "hf"), "--out", str(tmp_path / "hf2")]) == 2
    assert "E322" in capsys.readouterr().err
