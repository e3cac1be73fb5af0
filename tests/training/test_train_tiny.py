"""The tiny profile end to end on real posts: train, bundle, calibrate, evaluate, resume."""

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from sharelens.bundle import verify_bundle
from sharelens.labels import MOTIVES
from sharelens.registry import Registry
from training.config import TrainConfig
from training.corpus import sources as src
from training.corpus.build import build
from training.train import train

pytestmark = pytest.mark.skipif(src.default_raw_dir() is None, reason="no local mirror of the raw sources")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build(out_dir=out)
    return out / "corpus"


@pytest.mark.timeout(600)  # the whole pipeline: ~2 min on 2 free cores, more when they are shared
def test_tiny_profile_trains_and_evaluates(corpus_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.load("tiny", {"data_dir": str(corpus_dir)})
    bundle = train(cfg, models_dir=tmp_path)
    info = verify_bundle(bundle)
    assert info.meta["profile"] == "tiny" and info.meta["data_fingerprint"] != "unknown"
    assert info.calibration["fitted_on"] == "validation"
    metrics = json.loads((bundle / "eval" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert test["motive"]["model"]["n"] >= 400
    for head in ("motive", "tier"):
        for who in ("model", "tfidf_logreg", "majority"):
            assert 0.0 <= test[head][who]["accuracy"] <= 1.0
    assert {"ood_cctv", "ood_ced", "ordinary_test"} <= set(metrics["sets"])
    # the context-aware tier: the bundle carries its context features, the table its rows, the refit its record
    assert (bundle / "context.json").is_file() and info.meta["context"]["channels"] > 10
    for row in ("model, text only", "model without channel", "context_logreg", "tfidf_context_logreg"):
        assert 0.0 <= test["tier"][row]["macro_f1"] <= 1.0, row
    refit = info.meta["tier_refit"]
    assert refit["validation_qwk_after"] >= refit["validation_qwk_before"] and refit["train_posts"] > 1000
    motive_refit = info.meta["motive_refit"]  # second stage: kept only when validation does not drop
    assert motive_refit["train_posts"] > 1000 and motive_refit["epochs"] == cfg.motive_refit_epochs
    assert motive_refit["kept"] == (motive_refit["validation_macro_f1_after"] >= motive_refit["validation_macro_f1_before"])
    assert test["motive"]["confident_errors"].keys() == set(MOTIVES)
    # the model card travels in the bundle and states the figures `make eval` measured, with intervals
    card = (bundle / "README.md").read_text(encoding="utf-8")
    lo, hi = test["motive"]["model"]["macro_f1_ci95"]
    assert card.startswith("---\n") and f"{test['motive']['model']['macro_f1']:.3f} ({lo:.3f}–{hi:.3f})" in card
    assert (bundle / "eval" / "report.md").exists() and list((bundle / "eval").glob("*.png"))
    assert Registry(tmp_path).resolve(cfg.name, "latest")[1] == bundle
    assert not (tmp_path / cfg.name / "_runs").exists() or not any((tmp_path / cfg.name / "_runs").iterdir())

    # `sharelens refit --heads motive`: a new version; the encoder and the tier head are copied unchanged
    from safetensors.torch import load_file

    from training.refit import refit_bundle

    again, reports = refit_bundle(bundle, heads=("motive",), models_dir=tmp_path)
    assert again != bundle and verify_bundle(again).meta["refit_from"] == info.version
    assert set(reports) == {"motive"} and json.loads((again / "motive_refit.json").read_text()) == reports["motive"]
    old, new = load_file(bundle / "model.safetensors"), load_file(again / "model.safetensors")
    assert old.keys() == new.keys()
    for k in old:
        if not k.startswith("motive_head."):
            assert (old[k] == new[k]).all(), k
    assert Registry(tmp_path).resolve(cfg.name, "latest")[1] == again


class _KillMidEpoch(TrainerCallback):
    """Ctrl-C halfway through the second epoch: after the first epoch's checkpoint, before the next."""

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.epoch is not None and state.epoch >= 1.5:
            raise KeyboardInterrupt


def test_training_interrupted_mid_epoch_resumes_from_checkpoint(corpus_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import data_fingerprint

    cfg = TrainConfig.load("tiny", {"data_dir": str(corpus_dir), "max_train_posts": 120, "epochs": 2,
                                    "early_stopping_patience": 5})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, models_dir=tmp_path, evaluate_after=False, callbacks=[_KillMidEpoch()])
    runs = list((tmp_path / cfg.name / "_runs").iterdir())
    checkpoints = sorted(runs[0].glob("checkpoint-*"))
    assert len(runs) == 1 and len(checkpoints) == 1  # epoch 1 saved, epoch 2 cut short
    capsys.readouterr()
    bundle = train(cfg, models_dir=tmp_path, evaluate_after=False)
    assert f"Resuming from {checkpoints[0]}" in capsys.readouterr().out
    meta = verify_bundle(bundle).meta
    assert [round(h["epoch"]) for h in meta["validation_history"]] == [1, 2]
    assert meta["data_fingerprint"] == data_fingerprint(corpus_dir) != "unknown"


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_with_the_same_data_fingerprint(corpus_dir: Path,
                                                                             tmp_path: Path) -> None:
    """The real fault: `kill -9` of `python -m training.cli train` during its second epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.train import data_fingerprint

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SHARELENS_MODELS_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "training.cli", "train", "--profile", "tiny", "--no-eval",
           "--data-dir", str(corpus_dir), "--epochs", "3", "--max-train-posts", "600",
           "--early-stopping-patience", "5"]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("sharelens-tiny/_runs/*/checkpoint-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not list(tmp_path.glob("sharelens-tiny/v*"))  # no bundle from the killed run
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Resuming from" in again.stdout + again.stderr
    bundles = list(tmp_path.glob("sharelens-tiny/v*"))
    assert len(bundles) == 1
    meta = verify_bundle(bundles[0]).meta
    print(f"\nresumed after SIGKILL: epochs {[round(h['epoch']) for h in meta['validation_history']]}, "
          f"data fingerprint {meta['data_fingerprint'][:12]}")
    assert meta["data_fingerprint"] == data_fingerprint(corpus_dir)
    assert [round(h["epoch"]) for h in meta["validation_history"]] == [1, 2, 3]


def test_tiny_encoder_tokenises_chinese_characters(tiny_encoder_dir: Path, real_posts: list[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    ids = [i for t in real_posts[:200] for i in tok(t)["input_ids"]]
    # 400 characters cover about 70% of what posts use; a tokenizer that lost its vocabulary (the
    # transformers-5 `vocab_file=` trap) maps nearly everything to [UNK].
    assert sum(i == tok.unk_token_id for i in ids) / len(ids) < 0.4
