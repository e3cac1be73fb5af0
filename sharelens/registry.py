"""models/registry.json: every trained version of every model, and movable aliases
(`latest`, `production`, or any name). Versions are `v<NNNN>-<YYYYMMDD>`: increasing, never
reused, never overwritten. Names and versions are validated before they touch the filesystem."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sharelens.bundle import NAME_RE, VERSION_RE
from sharelens.errors import SharelensError

DEFAULT_ALIASES = ("production", "latest")
ALIAS_RE = NAME_RE


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "registry.json"

    # -- reading -----------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The registry, checked: a damaged file is a numbered error naming the file and the fix,
        never a KeyError or UnicodeDecodeError three calls later (a 500 in the API)."""
        if not self.path.exists():
            return {"format": "sharelens-registry/1", "models": {}}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise SharelensError("E228", f"{self.path} is not valid UTF-8 (byte {exc.start}); {_REPAIR}") from exc
        except json.JSONDecodeError as exc:
            raise SharelensError("E220", f"{self.path} is not valid JSON ({exc.msg}); {_REPAIR}") from exc
        problem = _shape_problem(doc)
        if problem is not None:
            raise SharelensError("E229", f"{self.path} has the wrong shape ({problem}); {_REPAIR}")
        return doc

    def models(self) -> list[str]:
        return sorted(self.read()["models"])

    def entry(self, name: str) -> dict[str, Any]:
        check_name(name)
        doc = self.read()
        if name not in doc["models"]:
            raise SharelensError("E221", f"no model named {name!r} in {self.path}; train one with `make train`")
        return doc["models"][name]

    def resolve(self, name: str, ref: str | None = None) -> tuple[str, Path]:
        """A version or alias -> (version, bundle folder). None means production, then latest."""
        entry = self.entry(name)
        versions = {v["version"] for v in entry["versions"]}
        aliases = entry.get("aliases")
        if ref is None:
            for alias in DEFAULT_ALIASES:
                if alias in aliases:
                    ref = alias
                    break
            else:
                raise SharelensError("E222", f"model {name!r} has no version yet; run `make train`")
        if ref in aliases:
            version = aliases[ref]
        elif VERSION_RE.match(ref) and ref in versions:
            version = ref
        else:
            raise SharelensError("E223", f"unknown model version or alias {ref!r} for {name!r}; known: "
                                 f"{', '.join(sorted(aliases) + sorted(versions))}")
        return version, self.root / name / version

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".registry.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self.read()
            yield doc
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)

    def next_version(self, name: str, today: datetime | None = None) -> str:
        check_name(name)
        doc = self.read()
        taken = [v["version"] for v in doc["models"].get(name, {}).get("versions", [])]
        on_disk = [p.name for p in (self.root / name).glob("v*")] if (self.root / name).exists() else []
        n = max([int(v[1:5]) for v in taken + on_disk if VERSION_RE.match(v)] + [0]) + 1
        day = (today or datetime.now(timezone.utc)).strftime("%Y%m%d")
        return f"v{n:04d}-{day}"

    def register(self, name: str, version: str, summary: dict[str, Any] | None = None) -> None:
        check_name(name)
        check_version(version)
        with self._locked() as doc:
            entry = doc["models"].setdefault(name, {"versions": [], "aliases": {}})
            if any(v["version"] == version for v in entry["versions"]):
                raise SharelensError("E224", f"{name} {version} is already registered; versions are never reused")
            entry["versions"].append({"version": version, "created_at": datetime.now(timezone.utc).isoformat(
                timespec="seconds"), "summary": summary or {}})
            entry["aliases"]["latest"] = version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        check_name(name)
        check_version(version)
        if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
            raise SharelensError("E225", f"invalid alias {alias!r}: use lowercase letters, digits, - or _")
        with self._locked() as doc:
            entry = doc["models"].get(name)
            if entry is None or not any(v["version"] == version for v in entry["versions"]):
                raise SharelensError("E223", f"unknown model version {version!r} for {name!r}")
            entry["aliases"][alias] = version

    def update_summary(self, name: str, version: str, summary: dict[str, Any]) -> None:
        with self._locked() as doc:
            for v in doc["models"][name]["versions"]:
                if v["version"] == version:
                    v["summary"] = {**v.get("summary", {}), **summary}


_REPAIR = ("restore it from a backup or repair it by hand: {\"models\": {name: {\"versions\": [{\"version\": "
           "\"v0001-20260101\"}, ...], \"aliases\": {alias: version}}}}, one version per bundle folder "
           "models/<name>/<version>")


def _shape_problem(doc: Any) -> str | None:
    """What is wrong with a parsed registry, or None: what the readers and writers index (here and
    in `training.cli models`) must be there; anything else is left alone."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return "'models' must be an object of models"
    for name, entry in doc["models"].items():
        if not isinstance(entry, dict):
            return f"model {name!r} must be an object"
        versions = entry.get("versions")
        if not isinstance(versions, list) or not all(
                isinstance(v, dict) and isinstance(v.get("version"), str) for v in versions):
            return f"'versions' of {name!r} must be a list of objects with a 'version' string"
        aliases = entry.get("aliases")
        if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
            return f"'aliases' of {name!r} must map names to version strings"
    return None


def check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise SharelensError("E226", f"invalid model name {name!r}: lowercase letters, digits, - or _ only")


def check_version(version: str) -> None:
    if not VERSION_RE.match(version or ""):
        raise SharelensError("E227", f"invalid model version {version!r}: expected v<NNNN>-<YYYYMMDD>")
