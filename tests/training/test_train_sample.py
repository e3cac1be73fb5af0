"""The whole pipeline on the committed sample (data/sample: 450 real CCTV News posts, MIT), no mirror needed:
build the corpus, train the tiny model, calibrate, evaluate, write the model card, score an archive and serve it;
training resumes after Ctrl-C and after SIGKILL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from sharelens.bundle import verify_bundle
from sharelens.labels import MOTIVES, TIERS
from sharelens.paths import SAMPLE_DIR
from sharelens.registry import Registry
from training.config import TrainConfig
from training.corpus.build import build_sample
from training.train import train


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample")
    report = build_sample(out_dir=out).to_dict()
    return out / "corpus", report


def _annotated(split_file_rows: list[dict], split: str) -> int:
    return sum(1 for r in split_file_rows if r["split"] == split and r["motive"])


def test_the_sample_builds_as_pinned(sample_build: tuple[Path, dict]) -> None:
    corpus, report = sample_build
    assert report["per_split"] == {"test": 94, "train": 260, "validation": 96}
    rows = [json.loads(line) for f in sorted((corpus.parent / "jsonl").glob("*.jsonl")) for line in f.open()]
    assert len(rows) == 450 and {r["domain"] for r in rows} == {"sample"}
    with (SAMPLE_DIR / "motives.csv").open(encoding="utf-8", newline="") as fh:
        labels = {r["post_id"]: r["motive"] for r in csv.DictReader(fh)}
    assert len(labels) == 400 and {r["post_id"]: r["motive"] for r in rows if r["motive"]} == labels
    # the time split: every training post is older than every validation post, and those than the test posts
    last = {s: max(r["created_at"] for r in rows if r["split"] == s) for s in ("train", "validation")}
    first = {s: min(r["created_at"] for r in rows if r["split"] == s) for s in ("validation", "test")}
    assert last["train"] <= first["validation"] and last["validation"] <= first["test"]
    licence = (SAMPLE_DIR / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "Qi Cong" in licence


@pytest.mark.timeout(600)
def test_sample_profile_trains_evaluates_scores_and_serves(sample_build: tuple[Path, dict], tmp_path: Path) -> None:
    corpus, _ = sample_build
    cfg = TrainConfig.load("sample", {"data_dir": str(corpus)})
    bundle = train(cfg, models_dir=tmp_path)
    info = verify_bundle(bundle)
    assert info.meta["profile"] == "sample" and info.calibration["fitted_on"] == "validation"
    assert Registry(tmp_path).resolve("sharelens-sample", "latest")[1] == bundle

    # make eval's figures, on the sample's test split, against its baselines, in the bundle's card
    metrics = json.loads((bundle / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (corpus.parent / "jsonl" / "test.jsonl").open()]
    test = metrics["sets"]["test"]
    assert test["motive"]["model"]["n"] == _annotated(rows, "test") == 78
    for head in ("motive", "tier"):
        for who in ("model", "tfidf_logreg", "majority"):
            assert 0.0 <= test[head][who]["macro_f1"] <= 1.0, (head, who)
    card = (bundle / "README.md").read_text(encoding="utf-8")
    lo, hi = test["motive"]["model"]["macro_f1_ci95"]
    assert card.startswith("---\n") and f"{test['motive']['model']['macro_f1']:.3f} ({lo:.3f}–{hi:.3f})" in card
    # its sources are the sample's one (MIT), not the whole corpus's
    assert "| sample | [MineSelf2016/SummerResearch]" in card and "MIT" in card and "loks666" not in card

    # sharelens score on the sample's test posts: one row per post, probabilities that sum to one
    from training.score import ScoreOptions, score

    archive = tmp_path / "archive.csv"
    with archive.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["post_id", "text"])
        w.writerows([[r["post_id"], r["text"]] for r in rows])
    out = tmp_path / "scores.csv"
    summary = score(archive, out, bundle, ScoreOptions(id_column="post_id"), progress=False)
    assert summary.scored == len(rows) and summary.rejected == 0
    with out.open(encoding="utf-8", newline="") as fh:
        scored = list(csv.DictReader(fh))
    assert [s["id"] for s in scored] == [r["post_id"] for r in rows]
    for s in scored:
        assert abs(sum(float(s[f"motive_{m}"]) for m in MOTIVES) - 1) < 1e-4
        assert abs(sum(float(s[f"tier_{t}"]) for t in TIERS) - 1) < 1e-4
        assert s["model_version"] == info.version

    # the API serves the trained bundle and agrees with the scores
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from serving.settings import Settings

    app = create_app(Settings(models_dir=tmp_path, model_name="sharelens-sample"))
    with TestClient(app) as client:
        r = client.post("/predict", json={"text": rows[0]["text"]})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    served = {p["motive"]: p["probability"] for p in result["motive"]["probabilities"]}
    assert r.json()["model"] == {"name": "sharelens-sample", "version": info.version}
    assert served == pytest.approx({m: float(scored[0][f"motive_{m}"]) for m in MOTIVES}, abs=1e-4)


class _KillMidEpoch(TrainerCallback):
    """Ctrl-C halfway through the second epoch: after the first epoch's checkpoint, before the next."""

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.epoch is not None and state.epoch >= 1.5:
            raise KeyboardInterrupt


def test_training_interrupted_mid_epoch_resumes_from_checkpoint(sample_build: tuple[Path, dict], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import data_fingerprint

    corpus, _ = sample_build
    cfg = TrainConfig.load("sample", {"data_dir": str(corpus), "max_train_posts": 120, "epochs": 2,
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
    assert meta["data_fingerprint"] == data_fingerprint(corpus) != "unknown"


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_with_the_same_data_fingerprint(sample_build: tuple[Path, dict],
                                                                             tmp_path: Path) -> None:
    """The real fault: `kill -9` of `python -m training.cli train` during its second epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.train import data_fingerprint

    corpus_dir = sample_build[0]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SHARELENS_MODELS_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "training.cli", "train", "--profile", "sample", "--no-eval",
           "--data-dir", str(corpus_dir), "--epochs", "3", "--max-train-posts", "600",
           "--early-stopping-patience", "5"]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("sharelens-sample/_runs/*/checkpoint-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(0.2)  # into the second epoch (an epoch of the sample is 9 steps, a few seconds)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not list(tmp_path.glob("sharelens-sample/v*"))  # no bundle from the killed run
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Resuming from" in again.stdout + again.stderr
    bundles = list(tmp_path.glob("sharelens-sample/v*"))
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
