"""A new version of a bundle with one or both heads refit on its frozen encoder (the second stage of
`make train`, runnable on its own): `python -m training.cli refit [--heads motive tier]`.

The encoder and everything not refit are copied; the new version records where it came from and
what each refit measured on validation."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sharelens.bundle import load_model, save_bundle, verify_bundle
from sharelens.errors import SharelensError
from sharelens.registry import Registry
from training.data import load_corpus

HEADS = ("motive", "tier")


def refit_bundle(bundle, heads: tuple[str, ...] = HEADS, models_dir=None) -> tuple[Path, dict]:
    """(new bundle folder, {head: report dict})."""
    from training.motive_refit import refit_motive_head
    from training.tier_refit import TierHeadSettings, refit_tier_head
    from training.train import MODELS_DIR, data_fingerprint, git_commit, resolve_path

    unknown = [h for h in heads if h not in HEADS]
    if unknown or not heads:
        raise SharelensError("E321", f"heads to refit must be among {list(HEADS)}, not {list(heads)}")
    info = verify_bundle(Path(bundle))
    model, tokenizer = load_model(info, runtime="transformers")
    features = getattr(model, "context_features", None)
    if "tier" in heads and features is None:
        raise SharelensError("E320", f"{bundle} has a text-only tier head; train a context-aware model first")
    cfg = yaml.safe_load((info.path / "train_config.yaml").read_text(encoding="utf-8"))
    if "tier" in heads and int(cfg.get("tier_head_epochs", 1)) <= 0:
        raise SharelensError("E322", f"tier_head_epochs is {cfg['tier_head_epochs']} in {info.path}/train_config.yaml: "
                             "a tier refit needs at least one epoch")
    data_dir = resolve_path(cfg.get("data_dir", "data/build/corpus"))
    corpus = load_corpus(data_dir)
    reports: dict[str, dict] = {}
    if "motive" in heads:
        from training.config import TrainConfig

        # bundles made before the two-population rule or the averaged seeds have no key: today's defaults
        cfg.setdefault("motive_validation_splits", TrainConfig().motive_validation_splits)
        cfg.setdefault("motive_refit_seeds", TrainConfig().motive_refit_seeds)
        splits = list(dict.fromkeys([cfg["validation_split"], *cfg["motive_validation_splits"]]))
        report = refit_motive_head(
            model, tokenizer, corpus, cfg["train_splits"], splits, info.max_length,
            epochs=int(cfg.get("motive_refit_epochs") or 60),
            class_weighting=cfg.get("motive_class_weighting", "inverse_sqrt"), seed=int(cfg.get("seed", 42)),
            seeds=int(cfg["motive_refit_seeds"]))
        print(report.summary())
        reports["motive"] = report.to_dict()
    if "tier" in heads:
        from training.config import TrainConfig

        defaults = TrainConfig()
        # bundles made before the forward-checked tier head have neither key: today's defaults
        cfg.setdefault("tier_head_epochs", defaults.tier_head_epochs)
        cfg.setdefault("tier_recent_splits", defaults.tier_recent_splits)
        cfg.pop("tier_refit_epochs", None)
        report, features = refit_tier_head(
            model, tokenizer, corpus, cfg["train_splits"], cfg["tier_recent_splits"], info.max_length,
            cfg.get("observed_age", True), channel_min_count=int(cfg.get("channel_min_count", 3)),
            settings=TierHeadSettings(epochs=int(cfg["tier_head_epochs"]), seed=int(cfg.get("seed", 42))))
        print(report.summary())
        reports["tier"] = report.to_dict()
    root = Path(models_dir or MODELS_DIR)
    registry = Registry(root)
    version = registry.next_version(info.name)
    meta = {k: v for k, v in info.meta.items() if k not in ("format", "library_versions", "name", "version", "files")}
    meta.update({"version": version, "refit_from": info.version, "git_commit": git_commit(),
                 "data_fingerprint": data_fingerprint(Path(data_dir))})
    meta.update({f"{head}_refit": report for head, report in reports.items()})
    if features is not None and isinstance(meta.get("context"), dict):
        meta["context"] = {**meta["context"], "channels": len(features.channels)}
    dest = save_bundle(root / info.name / version, model, tokenizer, meta,
                       yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), context_features=features)
    from training.model_card import write_model_card

    write_model_card(dest)
    registry.register(info.name, version, {"profile": cfg.get("profile"), "refit_from": info.version})
    for head, report in reports.items():
        (dest / f"{head}_refit.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return dest, reports
