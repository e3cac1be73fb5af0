"""`sharelens-serve predict`: a readable answer, or one error line and exit status 2."""

from __future__ import annotations

from serving.cli import main


def test_predict_prints_a_readable_answer(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖！关注@小明 并转发，周五抽3位送蓝牙耳机 #抽奖#", "--explain",
               "--models-dir", str(serving_models_dir)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "利益驱动" in out and "寻求帮助" in out and "%" in out
    assert "Engagement tier:" in out and "Top words" in out
    assert out.count("%") >= 10


def test_predict_reports_truncation(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖关注微博" * 40, "--models-dir", str(serving_models_dir)])
    assert rc == 0
    assert "more than the model window of 64" in capsys.readouterr().out


def test_empty_text_is_one_line_and_exit_2(serving_models_dir, capsys) -> None:
    rc = main(["predict", "   ", "--models-dir", str(serving_models_dir)])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert captured.err == "Error E401: text must not be empty or whitespace\n"


def test_unknown_model_is_one_line_and_exit_2(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖", "--model", "nope", "--models-dir", str(serving_models_dir)])
    assert rc == 2
    assert capsys.readouterr().err == "Error E409: unknown model version or alias: nope\n"
