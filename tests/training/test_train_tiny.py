"""The tiny profile end to end on real posts: train, bundle, calibrate, evaluate, resume."""

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from sharelens.bundle import verify_bundle
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
    assert {"ood_cctv", "ood_ced"} <= set(metrics["sets"])
    assert (bundle / "eval" / "report.md").exists() and list((bundle / "eval").glob("*.png"))
    assert Registry(tmp_path).resolve(cfg.name, "latest")[1] == bundle
    assert not (tmp_path / cfg.name / "_runs").exists() or not any((tmp_path / cfg.name / "_runs").iterdir())


class _Interrupt(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after the first checkpoint


def test_interrupted_training_resumes_from_checkpoint(corpus_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig.load("tiny", {"data_dir": str(corpus_dir), "max_train_posts": 120, "epochs": 2,
                                    "early_stopping_patience": 5})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, models_dir=tmp_path, evaluate_after=False, callbacks=[_Interrupt()])
    runs = list((tmp_path / cfg.name / "_runs").iterdir())
    assert len(runs) == 1 and list(runs[0].glob("checkpoint-*"))
    first_ckpt = sorted(runs[0].glob("checkpoint-*"))[0].name
    capsys.readouterr()
    bundle = train(cfg, models_dir=tmp_path, evaluate_after=False)
    assert f"Resuming from {runs[0] / first_ckpt}" in capsys.readouterr().out
    meta = verify_bundle(bundle).meta
    assert [round(h["epoch"]) for h in meta["validation_history"]] == [1, 2]


def test_tiny_encoder_tokenises_chinese_characters(tiny_encoder_dir: Path, real_posts: list[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    ids = [i for t in real_posts[:200] for i in tok(t)["input_ids"]]
    # 400 characters cover about 70% of what posts use; a tokenizer that lost its vocabulary (the
    # transformers-5 `vocab_file=` trap) maps nearly everything to [UNK].
    assert sum(i == tok.unk_token_id for i in ids) / len(ids) < 0.4
