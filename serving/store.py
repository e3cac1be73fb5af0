"""Which model answers a request, and keeping it in memory.

The registry is read on every resolution (a small JSON file), so promoting a version with
`production` takes effect without a restart. Loaded predictors are cached, at most
`capacity` versions, least recently used first out, the default version last: a canary or an
old version asked for by one client must not push out what everyone else is served.
A request's `model` is checked against the registry's names before any path is built, so a
string like "../../etc" never reaches the filesystem."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving import errors
from sharelens.bundle import NAME_RE, VERSION_RE
from sharelens.errors import SharelensError
from sharelens.explain import warm_up as warm_up_words
from sharelens.predictor import Predictor
from sharelens.registry import Registry

log = logging.getLogger("sharelens.serving")

WARM_UP_TEXT = "转发这条微博，和大家一起看看今天的热点 #话题# [微笑]"

Loader = Callable[[Path], Predictor]


def _default_loader(path: Path) -> Predictor:
    return Predictor.from_bundle(path)


class ModelStore:
    def __init__(self, models_dir: Path, name: str = "sharelens", default_ref: str | None = None,
                 capacity: int = 2, loader: Loader = _default_loader) -> None:
        self.registry = Registry(Path(models_dir))
        self.name = name
        self.default_ref = default_ref
        self.capacity = max(1, capacity)
        self._loader = loader
        self._cache: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self.default_version: str | None = None
        self.load_error: str | None = None
        self.on_load: Callable[[str, float], None] | None = None  # metrics hook: (version, seconds)

    # -- resolution ----------------------------------------------------------------------------
    def resolve(self, ref: str | None) -> tuple[str, Path]:
        """An alias or version (None: the configured default) -> (version, bundle folder)."""
        ref = ref if ref is not None else self.default_ref
        if ref is not None and not (VERSION_RE.match(ref) or NAME_RE.match(ref)):
            raise errors.unknown_model(ref)  # not even shaped like a version or an alias
        try:
            version, path = self.registry.resolve(self.name, ref)
        except SharelensError as exc:
            if exc.code in ("E221", "E222", "E223") and ref is not None:
                raise errors.unknown_model(ref) from None
            log.error("cannot resolve the default model: %s", exc)  # a deployment problem, not the client's
            raise errors.model_unavailable() from exc
        if not VERSION_RE.match(version):  # a hand-edited registry must not point outside models/
            raise errors.unknown_model(ref or "")
        return version, path

    # -- loading -------------------------------------------------------------------------------
    def get(self, ref: str | None = None) -> Predictor:
        """The predictor for `ref`, loading (and warming) it on first use."""
        version, path = self.resolve(ref)
        with self._lock:
            if ref is None:
                self.default_version = version  # follows `production` when it is moved
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._cache[version]
            predictor = self._load(version, path)
            self._cache[version] = predictor
            self._evict()
            return predictor

    def _load(self, version: str, path: Path) -> Predictor:
        start = time.perf_counter()
        try:
            predictor = self._loader(path)
            predictor.predict([WARM_UP_TEXT])  # first call pays tokenizer and kernel set-up
            warm_up_words()
        except SharelensError as exc:
            log.error("model %s %s could not be loaded: %s", self.name, version, exc)
            raise errors.model_unavailable() from exc
        seconds = time.perf_counter() - start
        log.info("loaded %s %s in %.2fs", self.name, version, seconds)
        if self.on_load is not None:
            self.on_load(version, seconds)
        return predictor

    def _evict(self) -> None:
        while len(self._cache) > self.capacity:
            victim = next((v for v in self._cache if v != self.default_version), None)
            if victim is None:
                break
            del self._cache[victim]
            log.info("unloaded %s %s (cache holds %d)", self.name, victim, self.capacity)

    def load_default(self) -> Predictor:
        """Load and warm the default model; /readyz turns 200 once this has returned."""
        try:
            predictor = self.get(None)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        self.load_error = None
        self._ready.set()
        return predictor

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # -- reporting -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def describe(self) -> dict[str, Any]:
        """Registry view for GET /models."""
        try:
            entry = self.registry.entry(self.name)
        except SharelensError as exc:
            log.error("cannot read the registry: %s", exc)
            raise errors.model_unavailable() from exc
        try:
            serving: str | None = self.resolve(None)[0]
        except SharelensError:
            serving = None
        return {
            "name": self.name,
            "serving": serving,
            "aliases": dict(sorted(entry.get("aliases", {}).items())),
            "versions": [{"version": v["version"], "created_at": v.get("created_at"),
                          "summary": v.get("summary", {})} for v in entry.get("versions", [])],
            "loaded": self.loaded_versions,
        }
