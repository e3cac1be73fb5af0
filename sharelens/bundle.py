"""The model bundle: a self-describing, versioned folder that training writes and everything
else loads (eval, predict, the API) through `load_bundle`.

models/<name>/<version>/
  model.safetensors      weights of the best epoch (encoder + both heads)
  last/model.safetensors weights of the last epoch, when it is not the best one (as fine-tuned, before the
                         second stages: its tier context tables may predate the refit vocabulary)
  config.json            the encoder's transformers config, plus (format 2) the sharelens fields
  modeling_sharelens.py, network.py, labels.py, lean_bert.py
                         (format 2) the network's code, for `trust_remote_code=True`
  tokenizer.json, tokenizer_config.json, ...
  labels.json            spec version, id2label for both heads
  context.json           the tier head's context features (channel vocabulary, buckets); absent
                         in text-only bundles
  calibration.json       fitted temperatures (1.0 until `make eval` fits them)
  train_config.yaml      the resolved training config
  bundle.json            format, versions, git commit, data fingerprint, timings, file hashes
  eval/                  metrics.json, report.md, plots
  README.md              the model card (Hugging Face header; training/model_card.py): use, data and
                         licences, agreement, figures with bootstrap intervals, failure modes

Formats (bundle.json `format`; both load, training writes the newest):
- `sharelens-bundle/2`, Hugging Face-native: written by `ShareLensModel.save_pretrained`
  (`sharelens.modeling_sharelens`). config.json is the encoder's config with the sharelens fields
  (both heads' labels, pooling, context features) and an `auto_map`; model.safetensors names the
  encoder's tensors as the encoder itself does and the heads' `motive_head.*`, `tier_proj.*`,
  `tier_bias`, `context.*`. `ShareLensModel.from_pretrained(folder)` and
  `AutoModel.from_pretrained(folder, trust_remote_code=True)` load the whole network; a plain
  `AutoModel.from_pretrained(folder)` loads the fine-tuned encoder with its weights.
- `sharelens-bundle/1` (v0001..v0003): config.json is the encoder's alone and every encoder tensor
  is named `encoder.*`. sharelens loads these as before; transformers cannot (a plain AutoModel
  would not find the encoder's weights): `python -m training.cli convert` writes a format-2 copy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharelens.errors import SharelensError
from sharelens.labels import MOTIVES, SPEC_VERSION, TIERS

BUNDLE_FORMAT = "sharelens-bundle/2"  # what save_bundle writes
LEGACY_FORMAT = "sharelens-bundle/1"  # encoder tensors named encoder.*, config.json the encoder's alone
BUNDLE_FORMATS = (LEGACY_FORMAT, BUNDLE_FORMAT)
WEIGHTS = "model.safetensors"
REQUIRED_FILES = ("bundle.json", "labels.json", "config.json", WEIGHTS, "tokenizer_config.json")
# `\Z`, not `$`: `$` also matches before a trailing newline, so "production\n" passed for a name
# (and got written into registry.json). [0-9], not \d: \d takes any Unicode digit ("v٠٠٠١-...").
# Anchored at both ends, so `.match` and `.fullmatch` agree.
VERSION_RE = re.compile(r"^v[0-9]{4}-[0-9]{8}\Z")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
CALIBRATION_KEYS = ("motive_temperature", "tier_temperature")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def labels_doc() -> dict[str, Any]:
    return {
        "spec_version": SPEC_VERSION,
        "motive_id2label": {str(i): m for i, m in enumerate(MOTIVES)},
        "tier_id2label": {str(i): t for i, t in enumerate(TIERS)},
    }


def library_versions() -> dict[str, str]:
    # Installed versions from package metadata: importing transformers just to read its version
    # would cost a serving process the seconds the lean runtime saves.
    from importlib.metadata import version

    import tokenizers
    import torch

    import sharelens

    return {"sharelens": sharelens.__version__, "torch": torch.__version__,
            "transformers": version("transformers"), "tokenizers": tokenizers.__version__}


def _major(v: str) -> str:
    return v.split(".")[0]


@dataclass
class BundleInfo:
    path: Path
    meta: dict[str, Any]
    calibration: dict[str, float]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", self.path.name))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.parent.name))

    @property
    def max_length(self) -> int:
        return int(self.meta.get("max_length", 512))

    @property
    def format(self) -> str:
        return str(self.meta.get("format"))

    @property
    def hf_native(self) -> bool:
        """Written by `save_pretrained` (format 2): weights under the encoder's own names."""
        return self.format == BUNDLE_FORMAT


def verify_bundle(path: Path, check_hash: bool = True) -> BundleInfo:
    """Check a bundle before anything loads it; raise E2xx with what to do otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise SharelensError("E210", f"no model bundle at {path}; run `make train` or pick a version from `make models`")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise SharelensError("E211", f"bundle {path} is incomplete (missing {', '.join(missing)}); "
                             "it was interrupted or damaged: retrain it or promote another version")
    try:
        meta = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
        labels = json.loads((path / "labels.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SharelensError("E212", f"bundle {path}: unreadable metadata ({exc.msg}); retrain it") from exc
    except UnicodeDecodeError as exc:
        raise SharelensError("E212", f"bundle {path}: unreadable metadata (not UTF-8); retrain it") from exc
    if not isinstance(meta, dict) or not isinstance(labels, dict):
        raise SharelensError("E212", f"bundle {path}: unreadable metadata (bundle.json and labels.json must be "
                             "JSON objects); retrain it")
    if meta.get("format") not in BUNDLE_FORMATS:
        raise SharelensError("E213", f"bundle {path} has format {meta.get('format')!r}, this sharelens reads "
                             f"{' and '.join(BUNDLE_FORMATS)}; upgrade sharelens or retrain")
    if labels != labels_doc():
        raise SharelensError("E214", f"bundle {path} was trained for labels {labels.get('spec_version')!r} "
                             f"that differ from the spec ({SPEC_VERSION}); retrain it on the current spec")
    have, want = library_versions(), meta.get("library_versions", {})
    for lib in ("transformers", "torch"):
        if lib in want and _major(want[lib]) != _major(have[lib]):
            raise SharelensError("E215", f"bundle {path} was saved with {lib} {want[lib]}, this environment has "
                                 f"{have[lib]}; install a compatible {lib} (`make setup`) or retrain")
    if check_hash:
        expected = meta.get("files", {}).get(WEIGHTS)
        if expected and sha256_file(path / WEIGHTS) != expected:
            raise SharelensError("E216", f"bundle {path}: {WEIGHTS} does not match its recorded checksum "
                                 "(corrupt or altered); retrain it or promote another version")
    return BundleInfo(path=path, meta=meta, calibration=read_calibration(path / "calibration.json"))


def read_calibration(calib_path: Path) -> dict[str, Any]:
    """The fitted temperatures (1.0 where none is fitted); E250 for a file that is not a JSON
    object of finite, positive temperatures: a damaged file must refuse the bundle, not turn
    into a division by zero or a crash on the first request."""
    calibration: dict[str, Any] = {"motive_temperature": 1.0, "tier_temperature": 1.0}
    if not calib_path.is_file():
        return calibration
    hint = "run `make eval` on this version again to rewrite it, or delete it to serve uncalibrated probabilities"
    try:
        doc = json.loads(calib_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise SharelensError("E250", f"{calib_path} is unreadable ({why}); {hint}") from exc
    if not isinstance(doc, dict):
        raise SharelensError("E250", f"{calib_path} must be a JSON object; {hint}")
    for key in CALIBRATION_KEYS:
        value = doc.get(key, 1.0)
        # bool is an int to Python, and NaN/Infinity are accepted by json.loads: refuse all three.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SharelensError("E250", f"{calib_path}: {key} must be a finite number above 0, not {value!r}; {hint}")
    calibration.update(doc)
    for key in CALIBRATION_KEYS:
        calibration[key] = float(calibration[key])
    return calibration


RUNTIMES = ("auto", "lean", "transformers")


def choose_runtime(info: BundleInfo, runtime: str = "auto") -> str:
    """"lean" (plain torch + tokenizers: `sharelens.lean_bert`) where the bundle's encoder is a
    plain BERT, else "transformers"; an explicit "lean" for another architecture is refused."""
    from sharelens.lean_bert import unsupported

    if runtime not in RUNTIMES:
        raise SharelensError("E252", f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime == "transformers":
        return runtime
    why = unsupported(read_config(info)) if (info.path / "tokenizer.json").is_file() else "no tokenizer.json"
    if why is None:
        return "lean"
    if runtime == "lean":
        raise SharelensError("E219", f"bundle {info.path} cannot run on the lean runtime ({why}); "
                             "use runtime 'transformers' or 'auto'")
    return "transformers"


def read_config(info: BundleInfo) -> dict[str, Any]:
    """config.json as a dict (E217 when unreadable)."""
    try:
        doc = json.loads((info.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SharelensError("E217", f"bundle {info.path}: config.json is unreadable ({exc}); "
                             "retrain it or promote another version") from exc
    if not isinstance(doc, dict):
        raise SharelensError("E217", f"bundle {info.path}: config.json is not a JSON object; "
                             "retrain it or promote another version")
    return doc


def load_model(info: BundleInfo, device: str = "cpu", runtime: str = "auto"):
    """Build the network from a verified bundle and load its weights strictly.

    runtime: "transformers" builds transformers' model (`ShareLensModel`) and tokenizer (what
    training used); "lean" the same function in plain torch and `tokenizers`
    (`sharelens.network.ShareLensNetwork` on `sharelens.lean_bert`, `sharelens.lean_tokenizer`:
    seconds less to import, the serving default); "auto" is lean where the architecture allows.
    Both bundle formats load: format 2 names the encoder's tensors as the encoder does
    (`sharelens.network.from_file_keys` renames them), format 1 as the network does.
    Returns (network, tokenizer)."""
    from safetensors.torch import load_file

    from sharelens.context_features import ContextFeatures
    from sharelens.modeling import from_file_keys, lean_network

    runtime = choose_runtime(info, runtime)
    features = ContextFeatures.load(info.path)  # E251 when context.json is unreadable or mismatched
    sizes = features.sizes() if features is not None else None
    config = read_config(info)
    if info.hf_native and (config.get("context_sizes") or None) != sizes:
        raise SharelensError("E251", f"bundle {info.path}: config.json's context_sizes {config.get('context_sizes')} "
                             f"do not match context.json ({sizes}); retrain the bundle")
    try:
        if runtime == "lean":
            from sharelens.lean_tokenizer import FastTokenizer

            tokenizer = FastTokenizer.from_folder(info.path)
            model = lean_network(config, context_sizes=sizes)
        else:
            from transformers import AutoConfig, AutoTokenizer

            from sharelens.modeling_sharelens import ShareLensConfig, ShareLensModel

            tokenizer = AutoTokenizer.from_pretrained(info.path)
            if info.hf_native:
                model = ShareLensModel(ShareLensConfig.from_pretrained(info.path))
            else:
                model = ShareLensModel.from_config(AutoConfig.from_pretrained(info.path), context_sizes=sizes)
        state = load_file(str(info.path / WEIGHTS), device=device)
        if info.hf_native:
            state = from_file_keys(state)
        model.load_state_dict(state, strict=True)
    except SharelensError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable bundle
        raise SharelensError("E217", f"bundle {info.path} could not be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}); retrain it or promote another version") from exc
    model.eval().to(device)
    model.runtime = runtime
    model.context_features = features
    return model, tokenizer


def write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_bundle(dest: Path, model, tokenizer, meta: dict[str, Any], train_config_yaml: str = "",
                last_weights: Path | None = None, context_features=None) -> Path:
    """Write a complete bundle (format 2, Hugging Face-native) atomically: everything goes to a
    hidden sibling folder that is renamed into place only when complete, so a crash never leaves a
    bundle that looks whole. `model` is a `ShareLensModel`; config.json, model.safetensors and the
    network's code are its `save_pretrained`. `last_weights`: a checkpoint's model.safetensors
    (the HF Trainer writes them with `save_pretrained`, so in the same names)."""
    import shutil

    from sharelens.modeling import ShareLensModel

    dest = Path(dest)
    if dest.exists():
        raise SharelensError("E218", f"{dest} exists; bundles are never overwritten")
    if not isinstance(model, ShareLensModel):
        raise TypeError(f"save_bundle writes a ShareLensModel (transformers runtime), not {type(model).__name__}")
    sizes = context_features.sizes() if context_features is not None else None
    if (model.config.context_sizes or None) != sizes:
        raise ValueError(f"the network's context slots {model.config.context_sizes} do not match the context "
                         f"features given ({sizes})")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # as JSON has it (lists, string keys), so that the config in memory equals the one on disk
    model.config.context_features = (json.loads(json.dumps(context_features.to_dict()))
                                     if context_features is not None else None)
    model.config.spec_version = SPEC_VERSION
    model.save_pretrained(tmp)
    if last_weights is not None:
        (tmp / "last").mkdir()
        shutil.copy2(last_weights, tmp / "last" / WEIGHTS)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "labels.json", labels_doc())
    if context_features is not None:
        context_features.save(tmp)
    write_json(tmp / "calibration.json", {"motive_temperature": 1.0, "tier_temperature": 1.0, "fitted_on": None})
    if train_config_yaml:
        (tmp / "train_config.yaml").write_text(train_config_yaml, encoding="utf-8")
    full = {"format": BUNDLE_FORMAT, "library_versions": library_versions(), "name": dest.parent.name,
            "version": dest.name, **meta, "files": {WEIGHTS: sha256_file(tmp / WEIGHTS)}}
    write_json(tmp / "bundle.json", full)
    tmp.rename(dest)
    return dest
