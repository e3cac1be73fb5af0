"""The bundle's model card and the bootstrap intervals it states."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import cohen_kappa_score, f1_score

from training.metrics import _macro_f1_from_confusion, _qwk_from_confusion, bootstrap_ci
from training.model_card import render, write_model_card


@pytest.mark.parametrize("k", [4, 10])
def test_confusion_metrics_equal_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 400)
    p = np.where(rng.random(400) < 0.6, y, rng.integers(0, k, 400))
    c = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    assert _macro_f1_from_confusion(c) == pytest.approx(f1_score(y, p, labels=sorted(set(y)), average="macro"))
    assert _qwk_from_confusion(c) == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))


def test_bootstrap_interval_brackets_the_figure_and_narrows_with_more_posts() -> None:
    rng = np.random.default_rng(0)

    def draw(n):
        y = rng.integers(0, 4, n)
        return y, np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n))

    y, p = draw(300)
    lo, hi = bootstrap_ci(y, p, 4, "qwk")
    assert lo < cohen_kappa_score(y, p, weights="quadratic") < hi
    y2, p2 = draw(3000)
    lo2, hi2 = bootstrap_ci(y2, p2, 4, "qwk")
    assert hi2 - lo2 < (hi - lo) / 2
    assert bootstrap_ci(y, p, 4, "qwk") == (lo, hi)  # seeded: the card does not change between runs


def _bundle(tmp_path: Path, with_metrics: bool) -> Path:
    b = tmp_path / "v0007-20260101"
    (b / "eval").mkdir(parents=True)
    (b / "bundle.json").write_text(json.dumps({"name": "sharelens", "version": b.name, "profile": "default",
                                               "train_posts": 123, "max_length": 112}))
    if with_metrics:
        row = {"macro_f1": 0.5123, "macro_f1_ci95": [0.47, 0.55], "accuracy": 0.6, "top2_accuracy": 0.8, "n": 460,
               "per_motive": {"opinion": {"f1": 0.2, "support": 9}, "belonging": {"f1": 0.7, "support": 30}}}
        tier = {"qwk": 0.3901, "qwk_ci95": [0.33, 0.45], "macro_f1": 0.44, "n": 778}
        (b / "eval" / "metrics.json").write_text(json.dumps({"sets": {"test": {
            "posts": 778, "motive": {"model": row, "calibration": {"ece_before": 0.25, "ece_after": 0.14}},
            "tier": {"model": tier}}}}))
    return b


def test_card_states_the_measured_figures_under_a_hub_header(tmp_path: Path) -> None:
    card = write_model_card(_bundle(tmp_path, with_metrics=True)).read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---")[1])
    assert header["language"] == ["zh"] and header["pipeline_tag"] == "text-classification"
    values = {r["task"]["name"]: r["metrics"][0]["value"] for r in header["model-index"][0]["results"]}
    assert values == {"share motive": 0.5123, "share tier": 0.3901}
    assert "| model | 0.512 (0.470–0.550) | 0.600 | 0.800 |" in card
    assert "| model | 0.390 (0.330–0.450) |" in card
    assert "0.250 before, 0.140 after" in card
    assert "opinion 0.20 (9)" in card  # the weakest motive is named as a failure mode
    for section in ("## Intended use", "## Out of scope", "## Training data", "## Known failure modes", "## Reproduce"):
        assert section in card


def test_card_before_evaluation_says_how_to_get_figures(tmp_path: Path) -> None:
    card = render(_bundle(tmp_path, with_metrics=False))
    assert "Not evaluated yet" in card and "model-index" not in card


def test_card_names_the_averaged_refit_heads(tmp_path: Path) -> None:
    from training.model_card import _refits

    refit = {"validation_macro_f1_before": 0.506, "validation_macro_f1_after": 0.53, "kept": True,
             "by_split": {"validation": {"before": 0.475, "after": 0.501}}}
    assert "mean of" not in _refits({"motive_refit": {**refit, "seeds": [42]}})
    line = _refits({"motive_refit": {**refit, "seeds": [42, 43, 44]}})
    assert "the mean of 3 heads (seeds 42, 43, 44), validation macro-F1 0.506 → 0.530 (kept)" in line
