"""The tiny profile end to end on the whole corpus built from the raw mirror: every evaluation set, the
context tables, both refits. (tests/training/test_train_sample.py does the same path on the committed sample,
without the mirror, with the resume tests.)"""

import json
from pathlib import Path

import pytest

from sharelens.bundle import verify_bundle
from sharelens.labels import MOTIVES
from sharelens.registry import Registry
from training.config import TrainConfig
from training.corpus.build import build
from training.train import train

pytestmark = pytest.mark.mirror


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build(out_dir=out)
    return out / "corpus"


@pytest.mark.timeout(600)  # the whole pipeline: ~2 min on 2 free cores, more when they are shared
def test_tiny_profile_trains_and_evaluates(corpus_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.load("tiny", {"data_dir": str(corpus_dir)})
    bundle = train(cfg, models_dir=tmp_path)
    info = verify_bundle(bundle)
    assert info.meta["profile"] == "tiny" and info.meta["data_fingerprint"] != "unknown"
    assert info.calibration["fitted_on"] == "validation"
    metrics = json.loads((bundle / "eval" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert test["motive"]["model"]["n"] >= 400
    for head in ("motive", "tier"):
        for who in ("model", "tfidf_logreg", "majority"):
            assert 0.0 <= test[head][who]["accuracy"] <= 1.0
    assert {"ood_cctv", "ood_ced", "ordinary_test"} <= set(metrics["sets"])
    # the context-aware tier: the bundle carries its context features, the table its rows, the refit its record
    assert (bundle / "context.json").is_file() and info.meta["context"]["channels"] > 10
    for row in ("model, text only", "model without channel", "context_logreg", "tfidf_context_logreg"):
        assert 0.0 <= test["tier"][row]["macro_f1"] <= 1.0, row
    # the tier head: checked forward in time on the later half of the recent splits, then fitted with them
    refit = info.meta["tier_refit"]
    assert refit["recent_splits"] == ["validation", "ordinary_validation"] and refit["train_posts"] > 1000
    # only the splits that gave the head posts (the aux splits carry no tier)
    assert refit["train_splits"] == ["train", "ordinary_train", "validation", "ordinary_validation"]
    assert refit["settings"]["epochs"] == cfg.tier_head_epochs
    assert {"feed", "ordinary"} <= set(refit["forward"]["per_domain"]) and refit["forward"]["holdout_posts"] > 300
    assert info.calibration["tier_temperature"] == refit["temperature"]
    assert info.calibration["tier_fitted_on"].startswith("forward check")
    assert info.meta["context"]["channels"] == refit["channels"] == len(json.loads((bundle / "context.json").read_text())["channels"])
    motive_refit = info.meta["motive_refit"]  # second stage: kept only when validation does not drop
    assert motive_refit["train_posts"] > 1000 and motive_refit["epochs"] == cfg.motive_refit_epochs
    assert motive_refit["seeds"] == [cfg.seed + i for i in range(cfg.motive_refit_seeds)] and cfg.motive_refit_seeds == 2
    assert motive_refit["kept"] == (motive_refit["validation_macro_f1_after"] >= motive_refit["validation_macro_f1_before"])
    # each validation population with read posts counts once in the keep rule
    by_split = motive_refit["by_split"]
    assert set(by_split) == {"validation", "ordinary_validation"}
    for when in ("before", "after"):
        mean = sum(b[when] for b in by_split.values()) / len(by_split)
        assert abs(motive_refit[f"validation_macro_f1_{when}"] - mean) < 1e-9
    assert motive_refit["validation_posts"] == sum(b["posts"] for b in by_split.values())
    assert test["motive"]["confident_errors"].keys() == set(MOTIVES)
    # the model card travels in the bundle and states the figures `make eval` measured, with intervals
    card = (bundle / "README.md").read_text(encoding="utf-8")
    lo, hi = test["motive"]["model"]["macro_f1_ci95"]
    assert card.startswith("---\n") and f"{test['motive']['model']['macro_f1']:.3f} ({lo:.3f}–{hi:.3f})" in card
    assert (bundle / "eval" / "report.md").exists() and list((bundle / "eval").glob("*.png"))
    assert Registry(tmp_path).resolve(cfg.name, "latest")[1] == bundle
    assert not (tmp_path / cfg.name / "_runs").exists() or not any((tmp_path / cfg.name / "_runs").iterdir())

    # `sharelens refit --heads motive`: a new version; the encoder and the tier head are copied unchanged
    from safetensors.torch import load_file

    from training.refit import refit_bundle

    again, reports = refit_bundle(bundle, heads=("motive",), models_dir=tmp_path)
    assert again != bundle and verify_bundle(again).meta["refit_from"] == info.version
    assert set(reports) == {"motive"} and json.loads((again / "motive_refit.json").read_text()) == reports["motive"]
    old, new = load_file(bundle / "model.safetensors"), load_file(again / "model.safetensors")
    assert old.keys() == new.keys()
    for k in old:
        if not k.startswith("motive_head."):
            assert (old[k] == new[k]).all(), k
    assert Registry(tmp_path).resolve(cfg.name, "latest")[1] == again
