"""Which model answers a request, keeping it in memory, and swapping it without dropping requests.

Requests that name no model get the pinned default: loaded and warmed at startup, and changed
only by `reload()`, `promote()` (POST /admin/reload, /admin/aliases) or `reload_if_moved()` (the
registry watch of every worker process, serving.watch), which load and warm the new version first
and swap it in under the lock only if that worked. So a registry pointing at a broken bundle never
turns into failed requests: the reload is refused and the old model keeps serving. (Before, the
default followed the registry on every request: a bad promotion took the service down, and the
first request after it paid the whole load.) Requests that name an alias or a version still
resolve it against the registry when they arrive.

Loaded predictors are cached, at most `capacity` versions (3 by default: the default, a canary
and one more; at 2 a client alternating between three versions paid a load and its sha256 on every
request), least recently used first out, the default version last: a canary or an old version asked for by one client must not push out what
everyone else is served. Loads take `_load_lock`, never the cache lock, so a load (seconds) does
not stall requests for models already in memory. A request's `model` is checked against the
registry's names before any path is built, so a string like "../../etc" never reaches the
filesystem."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving import errors
from sharelens.bundle import NAME_RE, VERSION_RE
from sharelens.errors import SharelensError
from sharelens.predictor import Predictor
from sharelens.registry import ALIAS_RE, Registry

log = logging.getLogger("sharelens.serving")

WARM_UP_TEXT = "转发这条微博，和大家一起看看今天的热点 #话题# [微笑]"

Loader = Callable[[Path], Predictor]


def _default_loader(path: Path) -> Predictor:
    return Predictor.from_bundle(path)


def loader_for(backend: str, runtime: str = "auto", threads: int | None = None) -> Loader:
    """The bundle loader of an inference path ("fp32" or "int8") on a runtime (sharelens.bundle;
    "onnxruntime": sharelens.onnx_runtime, its sessions on `threads` intra-op threads, the
    server's threads per model call)."""
    if backend == "fp32" and runtime == "auto":
        return _default_loader
    return lambda path: Predictor.from_bundle(path, backend=backend, runtime=runtime, threads=threads)


@dataclass
class Swap:
    """What a successful reload or promotion did."""

    version: str
    previous: str | None
    seconds: float


class ModelStore:
    def __init__(self, models_dir: Path, name: str = "sharelens", default_ref: str | None = None,
                 capacity: int = 3, loader: Loader = _default_loader) -> None:
        self.registry = Registry(Path(models_dir))
        self.name = name
        self.default_ref = default_ref
        self.capacity = max(1, capacity)
        self._loader = loader
        self._cache: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.RLock()  # the cache and the default; held only for dict operations
        self._load_lock = threading.Lock()  # one load, reload or promotion at a time
        self._ready = threading.Event()
        self._default: Predictor | None = None
        self.default_version: str | None = None
        self.load_error: str | None = None
        self.on_load: Callable[[str, float], None] | None = None  # metrics hook: (version, seconds)
        self.on_reload: Callable[[str, bool], None] | None = None  # metrics hook: (version, succeeded)
        self.on_default: Callable[[str], None] | None = None  # metrics hook: the default is now (version)

    # -- resolution ----------------------------------------------------------------------------
    def _resolve_checked(self, ref: str | None) -> tuple[str, Path]:
        """Registry resolution, raising SharelensError; the ref is shape-checked first."""
        if ref is not None and not (VERSION_RE.match(ref) or NAME_RE.match(ref)):
            raise errors.unknown_model(ref)  # not even shaped like a version or an alias
        version, path = self.registry.resolve(self.name, ref)
        if not VERSION_RE.match(version):  # a hand-edited registry must not point outside models/
            raise errors.unknown_model(ref or "")
        return version, path

    def resolve(self, ref: str | None) -> tuple[str, Path]:
        """An alias or version (None: the configured default) -> (version, bundle folder)."""
        ref = ref if ref is not None else self.default_ref
        try:
            return self._resolve_checked(ref)
        except errors.ApiError:
            raise
        except SharelensError as exc:
            if exc.code in ("E221", "E222", "E223") and ref is not None:
                raise errors.unknown_model(ref) from None
            log.error("cannot resolve the default model: %s", exc)  # a deployment problem, not the client's
            raise errors.model_unavailable() from exc

    # -- serving -------------------------------------------------------------------------------
    def get(self, ref: str | None = None) -> Predictor:
        """The predictor for `ref` (None: the pinned default), loading and warming it on first use."""
        if ref is None:
            return self._default or self._load_first_default()
        version, path = self.resolve(ref)
        with self._lock:
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._cache[version]
        with self._load_lock:
            with self._lock:  # loaded while we waited for the lock?
                if version in self._cache:
                    self._cache.move_to_end(version)
                    return self._cache[version]
            predictor = self._load_or_503(version, path)
            with self._lock:
                self._cache[version] = predictor
                self._evict()
            return predictor

    def _load_first_default(self) -> Predictor:
        """Startup, or a request before it finished: one load, everyone else waits for it."""
        with self._load_lock:
            if self._default is not None:
                return self._default
            version, path = self.resolve(None)
            with self._lock:
                cached = self._cache.get(version)
            self._install_default(version, cached or self._load_or_503(version, path))
            return self._default  # type: ignore[return-value]

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

    # -- swapping ------------------------------------------------------------------------------
    def reload(self) -> Swap:
        """Re-read the registry, load and warm what the default now resolves to (even the same
        version: `make eval` rewrites calibration.json in place), then swap it in. On any failure
        raise 409 and leave the serving model alone."""
        with self._load_lock:
            return self._reload_locked(fresh=None)

    def promote(self, alias: str, version: str) -> Swap:
        """Point `alias` at `version`, then reload. The version is loaded and warmed before the
        registry is touched: a broken bundle is refused (409) and the alias stays where it was."""
        if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
            raise errors.invalid_alias(alias)
        if not VERSION_RE.match(version):  # an exact version, not an alias; checked before any lookup
            raise errors.unknown_model(version)
        with self._load_lock:
            try:
                _, path = self._resolve_checked(version)
            except SharelensError:
                raise errors.unknown_model(version) from None
            predictor = self._load_or_409(version, path)
            try:
                self.registry.set_alias(self.name, alias, version)
            except SharelensError as exc:
                log.error("could not move %s to %s: %s", alias, version, exc)
                raise errors.reload_refused(version, exc.code) from exc
            log.info("alias %s of %s -> %s", alias, self.name, version)
            with self._lock:
                self._cache[version] = predictor
                self._evict()
            return self._reload_locked(fresh=predictor)

    def reload_if_moved(self) -> Swap | None:
        """What the registry watch calls when registry.json changed: if the default alias (or
        default_ref) now names another version than the one serving, `reload()`, with its
        guarantees (a version that cannot be loaded is refused with 409 and counted, and the old
        model keeps serving; so is a registry that cannot be read). None when the default did not
        move (another alias, a new version registered, or this process made the move itself)."""
        with self._load_lock:
            try:
                version, _ = self._resolve_checked(self.default_ref)
            except SharelensError:
                version = None  # unreadable or damaged: the reload below refuses it, logged and counted
            if version is not None and version == self.default_version:
                return None
            return self._reload_locked(fresh=None)

    def _reload_locked(self, fresh: Predictor | None) -> Swap:
        start = time.perf_counter()
        try:
            version, path = self._resolve_checked(self.default_ref)
        except SharelensError as exc:
            log.error("reload: cannot resolve the default model: %s", exc)
            self._count_reload(self.default_ref or "default", ok=False)
            raise errors.reload_refused(self.default_ref or "default", exc.code) from exc
        if fresh is None or getattr(fresh, "version", version) != version:
            fresh = self._load_or_409(version, path)
        previous = self.default_version
        self._install_default(version, fresh)
        self._count_reload(version, ok=True)
        log.info("reload: %s now serves %s (was %s)", self.name, version, previous)
        return Swap(version, previous, time.perf_counter() - start)

    def _install_default(self, version: str, predictor: Predictor) -> None:
        """The atomic swap: requests that already hold the old predictor finish on it."""
        with self._lock:
            self._default = predictor
            self.default_version = version
            self._cache[version] = predictor
            self._cache.move_to_end(version)
            self._evict()
        self.load_error = None
        self._ready.set()
        if self.on_default is not None:
            self.on_default(version)

    def _count_reload(self, version: str, ok: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(version, ok)

    # -- loading -------------------------------------------------------------------------------
    def _load(self, version: str, path: Path) -> Predictor:
        """Load and warm; raises SharelensError (E21x: the bundle, E421: its output) or anything."""
        start = time.perf_counter()
        predictor = self._loader(path)
        preds = predictor.predict([WARM_UP_TEXT])  # first call pays tokenizer and kernel set-up
        if not all(np.isfinite(p.motive_probs).all() and np.isfinite(p.tier_probs).all() for p in preds):
            raise SharelensError("E421", f"{self.name} {version} gives non-finite probabilities")
        seconds = time.perf_counter() - start
        log.info("loaded %s %s in %.2fs", self.name, version, seconds)
        if self.on_load is not None:
            self.on_load(version, seconds)
        return predictor

    def _load_or_503(self, version: str, path: Path) -> Predictor:
        try:
            return self._load(version, path)
        except SharelensError as exc:
            log.error("model %s %s could not be loaded: %s", self.name, version, exc)
            raise errors.model_unavailable() from exc

    def _load_or_409(self, version: str, path: Path) -> Predictor:
        try:
            return self._load(version, path)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the old model keeps serving
            code = exc.code if isinstance(exc, SharelensError) else "E500"
            log.error("reload refused, %s %s could not be loaded: %s", self.name, version, exc,
                      exc_info=not isinstance(exc, SharelensError))
            self._count_reload(version, ok=False)
            raise errors.reload_refused(version, code) from exc

    def _evict(self) -> None:
        while len(self._cache) > self.capacity:
            victim = next((v for v in self._cache if v != self.default_version), None)
            if victim is None:
                break
            del self._cache[victim]
            log.info("unloaded %s %s (cache holds %d)", self.name, victim, self.capacity)

    # -- reporting -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def current(self) -> tuple[Predictor | None, str | None]:
        """The predictor answering by default now and its version, one consistent pair (None, None
        before the first load). Never loads nor waits for a load: /readyz calls it on the event loop."""
        with self._lock:  # held only for dict operations, never during a load
            return self._default, self.default_version

    @property
    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def describe(self) -> dict[str, Any]:
        """Registry view for GET /models; `serving` is what answers now, not what the registry says."""
        try:
            entry = self.registry.entry(self.name)
        except SharelensError as exc:
            log.error("cannot read the registry: %s", exc)
            raise errors.model_unavailable() from exc
        serving = self.default_version
        if serving is None:
            try:
                serving = self.resolve(None)[0]
            except SharelensError:
                serving = None
        return {
            "name": self.name,
            "serving": serving,
            "aliases": dict(sorted(entry.get("aliases", {}).items())),
            "versions": [{"version": v["version"], "created_at": v.get("created_at"),
                          "summary": v.get("summary", {})} for v in entry.get("versions", [])],
            "loaded": self.loaded_versions,
            "channels": self._serving_channels(),
        }

    def _serving_channels(self) -> list[str]:
        """The channel vocabulary of the model answering by default (empty if none is loaded)."""
        version = self.default_version
        predictor = self._cache.get(version) if version is not None else None  # never loads one
        features = getattr(predictor, "features", None)
        return list(features.channels) if features is not None else []
