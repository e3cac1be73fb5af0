"""SHARELENS_BACKEND picks the inference path the server loads."""

from pathlib import Path

import pytest

from serving.settings import Settings
from serving.store import ModelStore, loader_for
from sharelens.errors import SharelensError


def test_int8_backend_without_export_is_refused_with_what_to_do(tiny_models_dir: Path) -> None:
    store = ModelStore(tiny_models_dir, "sharelens", loader=loader_for("int8"))
    with pytest.raises(SharelensError) as e:
        store.load_default()
    text = str(e.value) + str(e.value.__cause__ or "")
    assert "quantize" in text


def test_backend_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARELENS_BACKEND", "int8")
    assert Settings().backend == "int8"
    monkeypatch.setenv("SHARELENS_BACKEND", "fp16")
    with pytest.raises(ValueError):
        Settings()
