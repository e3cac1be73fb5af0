"""The training CLI fails with one line and exit code 2, never a stack trace."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sharelens.errors import SharelensError
from training.cli import main
from training.config import TrainConfig
from training.evaluate import read_records

REPO = Path(__file__).resolve().parents[2]


def test_unknown_profile_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error E301") and "default" in err[0]


def test_missing_eval_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--bundle", str(tmp_path), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("Error E315")


def test_promote_unknown_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("training.train.MODELS_DIR", tmp_path)
    assert main(["promote", "--model", "sharelens", "--version", "v0009-20260101"]) == 2
    assert "E221" in capsys.readouterr().err


def test_config_overrides_and_unknown_keys(tmp_path: Path) -> None:
    cfg = TrainConfig.load("fast", {"epochs": 1.0, "keep_layers": 2})
    assert (cfg.epochs, cfg.keep_layers, cfg.profile) == (1.0, 2, "fast")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(SharelensError) as e:
        TrainConfig.load(str(bad))
    assert e.value.code == "E302"


def test_eval_records_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "转发抽奖", "reposts": 50, "comments": 30, "likes": 30, "motive": "incentive"},
                               ensure_ascii=False) + "\n\n")
    assert read_records(good)[0]["tier"] == "medium"  # derived from the counts, never typed
    for line, code in (("{not json", "E310"), (json.dumps({"txt": "x"}), "E311"),
                       (json.dumps({"text": "x", "motive": "bribe"}), "E312")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(SharelensError) as e:
            read_records(bad)
        assert e.value.code == code


def test_help_lists_every_config_field() -> None:
    out = subprocess.run([sys.executable, "-m", "training.cli", "train", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    for field in TrainConfig.__dataclass_fields__:
        if field != "profile":
            assert "--" + field.replace("_", "-") in out


def test_one_command_lists_every_step_and_hands_the_serving_ones_their_arguments(capsys) -> None:
    import pytest

    from training.cli import DELEGATED, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    listed = capsys.readouterr().out
    for name in ("data", "encoder", "train", "eval", "models", "promote", "serve", "predict", "score", "quantize",
                 "bench", "loadtest"):
        assert f"    {name} " in listed, name
    for name in DELEGATED:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])  # the module's own parser answers, with its own options
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--no-such-option"])
    assert exc.value.code == 2
    assert main(["bench", "--configs", "fp64"]) == 2  # the module's one-line error and exit status
    assert "Error E431" in capsys.readouterr().err


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from training.cli import main

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the `train` extra were not installed
    assert main(["data", "--sample"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "sources" not in err  # refused before any work (no build progress bar)
    assert err == ("Error E106: `sharelens data` needs the 'train' extra (datasets is not installed): "
                   "pip install 'sharelens[train]'")
