"""Shared fixtures: real posts from the committed, openly licensed sample (data/sample: 450 CCTV News
posts, MIT), a tiny BERT with a Chinese character vocabulary, and a tiny but complete model bundle +
registry. None of them needs the raw mirror (../shared): tests that do are marked `mirror` and skip
without it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CSV = (REPO / "data" / "sample" / "raw" / "MineSelf2016__SummerResearch" / "dataset" / "sina_cctv_raw_data"
              / "sina_cctv_sample.csv")


def _tiny_context():
    from sharelens.context_features import ContextFeatures

    return ContextFeatures(channels=("明星", "热门", "社会"))


TINY_CONTEXT = _tiny_context()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `mirror` read the raw sources: without the mirror they skip, saying why."""
    from sharelens.paths import default_raw_dir

    raw = default_raw_dir()
    if raw is not None and raw.is_dir():
        return
    skip = pytest.mark.skip(reason=f"no raw mirror ({raw or '../shared/data/raw'}); set SHARELENS_RAW_DIR to one")
    for item in items:
        if "mirror" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def real_posts() -> list[str]:
    """Texts of the 450 real posts of the committed sample (normalised), in the sample's order."""
    from sharelens.text import normalise_text

    with SAMPLE_CSV.open(encoding="utf-8-sig", newline="") as fh:
        texts = [normalise_text(r["WB_text"]) for r in csv.DictReader(fh)]
    return [t for t in texts if t]


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory, real_posts: list[str]) -> Path:
    from training.tiny_encoder import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), real_posts[:800], vocab_chars=400)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path) -> Path:
    """A models/ folder with one registered, untrained tiny bundle (aliases latest + production)
    whose tier head reads context (three known channels)."""
    import torch
    from transformers import AutoTokenizer

    from sharelens.modeling import ShareLensModel
    from sharelens.registry import Registry

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = ShareLensModel.from_encoder(str(tiny_encoder_dir), context_sizes=TINY_CONTEXT.sizes())
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    reg = Registry(root)
    version = reg.next_version("sharelens")
    from sharelens.bundle import save_bundle

    save_bundle(root / "sharelens" / version, model, tokenizer, {"max_length": 64, "profile": "test"},
                context_features=TINY_CONTEXT)
    reg.register("sharelens", version)
    reg.set_alias("sharelens", "production", version)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models_dir: Path) -> Path:
    from sharelens.registry import Registry

    return Registry(tiny_models_dir).resolve("sharelens")[1]


def write_legacy_copy(bundle: Path, dest: Path) -> Path:
    """A copy of a bundle in the layout of v0001..v0003 (format sharelens-bundle/1): config.json
    the encoder's alone, every encoder tensor named `encoder.*`, no network code in the folder."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from sharelens.bundle import LEGACY_FORMAT, WEIGHTS, sha256_file
    from sharelens.modeling import ShareLensConfig, from_file_keys

    shutil.copytree(bundle, dest)
    for code in ("modeling_sharelens.py", "network.py", "labels.py", "lean_bert.py"):
        (dest / code).unlink(missing_ok=True)
    config = ShareLensConfig.from_pretrained(bundle)
    (dest / "config.json").unlink()
    config.encoder_config().save_pretrained(dest)
    state = from_file_keys(load_file(str(bundle / WEIGHTS)))
    save_file(state, str(dest / WEIGHTS))
    meta = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    meta.update(format=LEGACY_FORMAT, files={WEIGHTS: sha256_file(dest / WEIGHTS)})
    (dest / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def legacy_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    """The tiny bundle in the old layout (format 1), as the production bundles v0001..v0003 are."""
    return write_legacy_copy(tiny_bundle, tmp_path_factory.mktemp("legacy") / "sharelens" / tiny_bundle.name)
