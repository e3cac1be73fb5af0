"""ModelStore: resolution, the two-version cache, warm-up, and no filesystem access for bad refs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import ApiError
from serving.store import WARM_UP_TEXT, ModelStore


class FakePredictor:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.warm: list[str] = []

    def predict(self, texts: list[str]) -> list[object]:
        self.warm.extend(texts)
        return []


def _registry(root: Path, n: int) -> list[str]:
    versions = [f"v{i:04d}-20260101" for i in range(1, n + 1)]
    doc = {"format": "sharelens-registry/1", "models": {"sharelens": {
        "versions": [{"version": v} for v in versions],
        "aliases": {"production": versions[0], "latest": versions[-1]}}}}
    (root / "registry.json").write_text(json.dumps(doc), encoding="utf-8")
    return versions


def test_cache_keeps_at_most_its_capacity_and_never_drops_the_default(tmp_path: Path) -> None:
    versions = _registry(tmp_path, 4)
    loads: list[Path] = []
    store = ModelStore(tmp_path, capacity=2, loader=lambda p: loads.append(p) or FakePredictor(p))
    default = store.load_default()
    assert store.ready and store.default_version == versions[0]
    assert default.warm == [WARM_UP_TEXT]  # warmed before first use
    for v in versions[1:]:
        store.get(v)
        assert len(store.loaded_versions) <= 2
        assert versions[0] in store.loaded_versions
    assert store.get(None) is default  # cached, not reloaded
    assert store.get("production") is default
    assert [p.name for p in loads] == versions  # each loaded once
    store.get(versions[1])  # evicted earlier: loaded again
    assert len(loads) == 5


def test_aliases_are_read_on_every_call(tmp_path: Path) -> None:
    versions = _registry(tmp_path, 2)
    store = ModelStore(tmp_path, loader=FakePredictor)
    assert store.resolve(None)[0] == versions[0]
    doc = json.loads((tmp_path / "registry.json").read_text())
    doc["models"]["sharelens"]["aliases"]["production"] = versions[1]
    (tmp_path / "registry.json").write_text(json.dumps(doc))
    assert store.resolve(None)[0] == versions[1]  # a promotion needs no restart


@pytest.mark.parametrize("ref", ["../../etc", "v0001-20260101/../../x", "/abs", "UPPER", "", "a" * 100])
def test_bad_refs_are_refused_before_any_lookup(tmp_path: Path, ref: str) -> None:
    _registry(tmp_path, 1)
    store = ModelStore(tmp_path, loader=FakePredictor)
    store.registry.read = lambda: pytest.fail("the registry was read")  # type: ignore[method-assign]
    with pytest.raises(ApiError) as e:
        store.get(ref)
    assert e.value.status == 404 and e.value.detail == f"unknown model version or alias: {ref[:80]}" + (
        "…" if len(ref) > 80 else "")


def test_registry_pointing_outside_models_is_refused(tmp_path: Path) -> None:
    doc = {"format": "sharelens-registry/1", "models": {"sharelens": {
        "versions": [{"version": "v0001-20260101"}], "aliases": {"production": "../../etc"}}}}
    (tmp_path / "registry.json").write_text(json.dumps(doc), encoding="utf-8")
    store = ModelStore(tmp_path, loader=lambda p: pytest.fail(f"tried to load {p}"))
    with pytest.raises(ApiError) as e:
        store.get("production")
    assert e.value.status == 404


def test_real_bundle_loads_and_predicts(store, versions) -> None:
    predictor = store.get("canary")
    assert predictor.version == versions["canary"]
    assert store.get(versions["canary"]) is predictor


def test_alternating_between_three_versions_loads_each_once(tmp_path: Path) -> None:
    """A client comparing three versions must not pay a load (and its sha256) on every request."""
    from serving.settings import Settings

    versions = _registry(tmp_path, 3)
    loads: list[str] = []
    for store in (ModelStore(tmp_path, loader=lambda p: loads.append(p.name) or FakePredictor(p)),
                  ModelStore(tmp_path, capacity=Settings().cache_size,
                             loader=lambda p: loads.append(p.name) or FakePredictor(p))):
        loads.clear()
        store.load_default()
        for _ in range(4):
            for v in versions:
                store.get(v)
        assert sorted(loads) == versions

