"""Fixtures of the scoring tests (local and Ray engines): the tiny bundle's predictor, and the tiny models folder
standing in for models/ (what `sharelens score` resolves --model / --version in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharelens.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture
def models(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("training.train.MODELS_DIR", tiny_models_dir)
    return tiny_models_dir
