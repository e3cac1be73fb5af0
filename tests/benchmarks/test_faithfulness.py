"""AOPC comprehensiveness on real posts with the tiny model: finite numbers, deterministic given a seed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.faithfulness import aopc


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path):
    from sharelens.predictor import Predictor

    return Predictor.from_bundle(tiny_bundle)


def test_aopc_returns_finite_numbers(predictor, real_posts) -> None:
    result = aopc(predictor, real_posts[:50], k_values=(1, 3, 5), seed=0)
    assert result.n_texts > 40
    assert math.isfinite(result.attributed) and math.isfinite(result.random)
    assert result.ratio is None or math.isfinite(result.ratio)
    assert set(result.per_k) == {1, 3, 5}


def test_aopc_is_deterministic_given_a_seed(predictor, real_posts) -> None:
    a = aopc(predictor, real_posts[:8], seed=3)
    b = aopc(predictor, real_posts[:8], seed=3)
    assert a == b
