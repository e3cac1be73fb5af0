"""`make quantize` end to end on the tiny bundle and a small corpus of real posts: the int8
export lands beside the weights and accuracy.json compares both backends with the eval code."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sharelens.labels import MOTIVES, TIERS
from sharelens.predictor import Predictor
from training.quantize import main, quantize_bundle, render


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, real_posts: list[str]) -> Path:
    """train + test splits of real posts with labels spread over every motive and tier."""
    import datasets

    def rows(texts: list[str]) -> list[dict]:
        return [{"text": t, "motive": MOTIVES[i % len(MOTIVES)] if i % 3 else None, "tier": TIERS[i % len(TIERS)],
                 "domain": "feed"} for i, t in enumerate(texts)]

    out = tmp_path_factory.mktemp("corpus") / "corpus"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows(real_posts[200:264])),
                          "test": datasets.Dataset.from_list(rows(real_posts[:120]))}).save_to_disk(str(out))
    return out


def test_quantize_bundle_writes_export_and_accuracy_report(tiny_bundle: Path, tmp_path: Path,
                                                           small_corpus: Path) -> None:
    bundle = tmp_path / "sharelens" / tiny_bundle.name
    shutil.copytree(tiny_bundle, bundle)
    doc = quantize_bundle(bundle, data_dir=str(small_corpus), calibration_posts=32)
    report = json.loads((bundle / "int8" / "accuracy.json").read_text())
    assert report["posts"] == 120 and report["split"] == "test"
    for backend in ("fp32", "int8"):
        for key in ("motive_macro_f1", "tier_macro_f1", "tier_qwk"):
            assert report[backend][key] is not None
        assert report[backend]["motive_posts"] == 80 and report[backend]["tier_posts"] == 120
    for key in ("motive_macro_f1", "tier_macro_f1", "tier_qwk"):
        assert report["difference_points"][key] == pytest.approx(
            100 * (report["int8"][key] - report["fp32"][key]), abs=1e-3)
    assert report["smoothing"] == {"alpha": 0.8, "split": "train", "posts": 32, "seed": 0}
    assert isinstance(report["target"]["met"], bool)
    assert report["agreement"]["top_motive"] >= 0.95
    assert "target" in render(doc) and "motive_macro_f1" in render(doc)
    # the export it wrote is the one the int8 backend now loads
    assert Predictor.from_bundle(bundle, backend="int8").backend == "int8"


def test_cli_exports_without_evaluation(tiny_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    monkeypatch.setattr("training.train.MODELS_DIR", models)
    assert main(["--model", "sharelens", "--version", "production", "--no-eval", "--calibration-posts", "0"]) == 0
    assert "int8 export (no smoothing)" in capsys.readouterr().out
    assert list(models.glob("sharelens/v*/int8/model.int8.safetensors"))


def test_cli_reports_errors_with_a_code(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("training.train.MODELS_DIR", tiny_models_dir)
    assert main(["--model", "sharelens", "--version", "v9999-20990101", "--no-eval"]) == 2
    assert "E223" in capsys.readouterr().err
