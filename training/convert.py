"""`python -m training.cli convert`: a Hugging Face-native copy (bundle format 2) of a format-1
bundle (v0001..v0003), so that `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads
it with both heads and a plain `AutoModel.from_pretrained(folder)` finds the encoder's weights.

The source is never modified. The copy holds the same tensors (renamed to the encoder's own names,
checked equal after writing), a config.json with the sharelens fields, the network's code, and
everything else of the source (tokenizer, labels, context features, calibration, eval/, train
config); its int8 export, when valid, is kept (its manifest now names the new weights file: the
int8 tensors do not depend on the weights' names). By default the copy is registered as the next
version of the model (aliases do not move: `make promote` it); `--out` writes a folder outside the
registry instead, keeping the source's version name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from sharelens.bundle import (
    BUNDLE_FORMAT,
    WEIGHTS,
    library_versions,
    load_model,
    sha256_file,
    verify_bundle,
    write_json,
)
from sharelens.errors import SharelensError
from sharelens.modeling import from_file_keys, to_file_keys
from sharelens.registry import Registry


def convert_bundle(bundle: Path, out: Path | None = None, models_dir: Path | None = None) -> Path:
    """The converted bundle's folder: `out`, or the next version under `models_dir` (registered)."""
    from safetensors.torch import load_file, save_file

    from sharelens.quantize import INT8_DIR, MANIFEST, verify_int8

    info = verify_bundle(Path(bundle))
    if info.hf_native:
        raise SharelensError("E322", f"{info.path} is already a Hugging Face-native bundle ({BUNDLE_FORMAT}); "
                             "nothing to convert")
    model, _ = load_model(info, runtime="transformers")
    reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
    registry = None
    if out is None:
        from training.train import MODELS_DIR

        registry = Registry(Path(models_dir or MODELS_DIR))
        version = registry.next_version(info.name)
        dest = registry.root / info.name / version
    else:
        version, dest = info.version, Path(out)
    if dest.exists():
        raise SharelensError("E218", f"{dest} exists; bundles are never overwritten")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    # Everything but what this step rewrites (config.json, weights, bundle.json, model card).
    shutil.copytree(info.path, tmp, ignore=shutil.ignore_patterns("config.json", WEIGHTS, "bundle.json", "README.md",
                                                                  ".*"))
    try:
        features = getattr(model, "context_features", None)
        model.config.context_features = json.loads(json.dumps(features.to_dict())) if features is not None else None
        model.save_pretrained(tmp)
        if (info.path / "last" / WEIGHTS).is_file():
            last = to_file_keys(load_file(str(info.path / "last" / WEIGHTS)))
            save_file({k: v.contiguous() for k, v in last.items()}, str(tmp / "last" / WEIGHTS),
                      metadata={"format": "pt"})
        source_sha = info.meta.get("files", {}).get(WEIGHTS) or sha256_file(info.path / WEIGHTS)
        new_sha = sha256_file(tmp / WEIGHTS)
        meta = {**info.meta, "format": BUNDLE_FORMAT, "library_versions": library_versions(), "name": info.name,
                "version": version, "files": {WEIGHTS: new_sha},
                "converted_from": {"version": info.version, "format": info.format, "weights_sha256": source_sha}}
        write_json(tmp / "bundle.json", meta)
        if (tmp / INT8_DIR).is_dir():
            try:
                verify_int8(info)  # valid for the source's weights: the same tensors, so valid for the copy
                manifest_path = tmp / INT8_DIR / MANIFEST
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                manifest["source_weights_sha256"] = new_sha
                manifest["bundle"] = {"name": info.name, "version": version}
                write_json(manifest_path, manifest)
            except SharelensError as exc:
                shutil.rmtree(tmp / INT8_DIR)
                print(f"int8 export not carried over ({exc.code}: {exc.message}); run `make quantize` on the copy")
        _model_card(info.path, tmp, version)
        _check_same_tensors(tmp, reference)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)
    if registry is not None:
        entry = next((v for v in registry.entry(info.name)["versions"] if v["version"] == info.version), {})
        registry.register(info.name, version, {**entry.get("summary", {}), "converted_from": info.version})
    return dest


def _model_card(source: Path, folder: Path, version: str) -> None:
    """The source's card, as measured then, with the new version and how transformers loads it; a
    fresh card (training/model_card.py) where the source has none."""
    from training.model_card import CARD, hf_usage, write_model_card

    meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    if not (source / CARD).is_file():
        write_model_card(folder)
        return
    lines = (source / CARD).read_text(encoding="utf-8").split("\n")
    old_title = f"# {meta['name']} {meta['converted_from']['version']}"
    lines = [f"# {meta['name']} {version}" if line == old_title else line for line in lines]
    at = next((i for i, line in enumerate(lines) if line.startswith("- Load: `sharelens.Predictor")), None)
    if at is not None:
        lines[at + 1:at + 1] = hf_usage(meta)
    (folder / CARD).write_text("\n".join(lines), encoding="utf-8")


def _check_same_tensors(folder: Path, reference: dict[str, torch.Tensor]) -> None:
    """The written bundle loads (verified, strictly) into the very tensors of the source."""
    converted, _ = load_model(verify_bundle(folder), runtime="transformers")
    state = converted.state_dict()
    from safetensors.torch import load_file

    on_file = from_file_keys(load_file(str(folder / WEIGHTS)))
    differ = [k for k in reference if k not in state or not torch.equal(state[k], reference[k])
              or (k in on_file and not torch.equal(on_file[k], reference[k]))]
    if differ or set(state) != set(reference):
        raise SharelensError("E323", f"the converted copy's tensors differ from the source's ({differ[:3]}); "
                             "nothing was written")
