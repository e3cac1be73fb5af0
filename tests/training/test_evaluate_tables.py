"""Pieces of `make eval`'s report that need no model: the most confident errors per motive, and the
order of the tier table's rows."""

import numpy as np

from sharelens.labels import MOTIVES
from training.evaluate import TIER_VARIANTS, confident_errors, tier_rows


def test_confident_errors_are_wrong_and_surest_first() -> None:
    y = np.array([0, 0, 0, 1])
    probs = np.full((4, len(MOTIVES)), 0.01)
    probs[0, 0] = 0.9  # right: never listed
    probs[1, 2] = 0.6  # wrong, sure
    probs[2, 3] = 0.8  # wrong, surer
    probs[3, 1] = 0.7  # right
    out = confident_errors(["a", "b", "c", "d"], y, probs, k=10)
    assert [e["post_id"] for e in out[MOTIVES[0]]] == ["c", "b"]
    assert out[MOTIVES[0]][0] == {"post_id": "c", "predicted": MOTIVES[3], "confidence": 0.8}
    assert out[MOTIVES[1]] == []


def test_tier_rows_put_model_variants_before_baselines() -> None:
    res = {"majority": {}, "model": {}, "context_logreg": {}, "model, text only": {}, "calibration": {}}
    assert tier_rows(res) == ["model", "model, text only", "context_logreg", "majority"]
    assert list(TIER_VARIANTS)[:3] == ["model", "model + observed age", "model, text only"]
