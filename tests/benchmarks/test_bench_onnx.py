"""`make bench`'s ONNX Runtime rows and verdict (benchmarks.bench.onnx_bench / onnx_rows), on fake
figures: no onnxruntime needed. The measured path runs in tests/sharelens/test_onnx_runtime.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import bench


def _onnx(served_p50: float = 10.0, served_batch: float = 60.0, ort_int8_motive: float = 0.512) -> dict:
    acc = {"motive_posts": 460, "tier_posts": 778, "top_motive_agrees_with_fp32": 0.95}
    return {
        "threads": 2, "rounds": 2,
        "onnxruntime fp32": {"single_p50_ms": 15.0, "batch_posts_per_s": 40.0},
        "onnxruntime int8": {"single_p50_ms": 12.0, "batch_posts_per_s": 50.0},
        "int8 lean": {"single_p50_ms": served_p50, "batch_posts_per_s": served_batch},
        "accuracy": {
            "int8 lean": {**acc, "motive_macro_f1": 0.5159, "tier_macro_f1": 0.4409},
            "onnxruntime fp32": {**acc, "motive_macro_f1": 0.5080, "tier_macro_f1": 0.4454,
                                 "top_motive_agrees_with_fp32": 1.0},
            "onnxruntime int8": {**acc, "motive_macro_f1": ort_int8_motive, "tier_macro_f1": 0.4420},
        },
    }


def _render(onnx: dict | None) -> str:
    return bench.render({"configs": ["fp32 lean", "int8 lean"], "inprocess": {}, "onnx": onnx})


def _row(out: str, start: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_rows_and_a_verdict_at_equal_accuracy() -> None:
    out = _render(_onnx())
    assert _row(out, "in-process onnxruntime fp32")[1] == "15.0 ms / 40.0 posts/s"
    assert "2 threads, best of 2" in _row(out, "in-process onnxruntime int8")[0]
    assert _row(out, "in-process int8 lean")[1] == "10.0 ms / 60.0 posts/s"
    assert _row(out, "macro-F1 motive / tier, int8 lean (460 / 778 labelled posts)")[1] == \
        "0.5159 / 0.4409 (top motive = fp32's on 95.0%)"
    assert _row(out, "macro-F1 motive / tier, onnxruntime fp32")[1] == "0.5080 / 0.4454 (top motive = fp32's on 100.0%)"
    # ORT int8 - served: motive -0.39, tier +0.11 points: equal; served 12/10 = x1.20 faster, 60/50 = x1.20
    assert out.splitlines()[-1] == (
        "Verdict: served int8 lean vs ORT int8: single p50 x1.20 faster, batch throughput x1.20 faster at equal "
        "accuracy (ORT int8 - served, macro-F1 points: motive -0.39, tier +0.11); served at least as fast: yes")


def test_verdict_says_slower_and_not_met() -> None:
    last = _render(_onnx(served_p50=24.0, served_batch=40.0)).splitlines()[-1]
    assert "single p50 x2.00 slower, batch throughput x1.25 slower at equal accuracy" in last
    assert last.endswith("served at least as fast: NO")


def test_verdict_refuses_to_call_unequal_accuracy_equal() -> None:
    last = _render(_onnx(ort_int8_motive=0.4959)).splitlines()[-1]  # 2.00 points below the served path
    assert "accuracy NOT equal (ORT int8 - served, macro-F1 points: motive -2.00, tier +0.11" in last
    assert "at equal accuracy" not in last.split(";")[0]


def test_unavailable_and_skipped_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import raises ImportError
    o = bench.onnx_bench(["x"], tmp_path, 1, {}, tmp_path / "none.jsonl")
    assert o == {"error": "onnxruntime is not installed (ModuleNotFoundError); `pip install -e '.[bench]'` adds it"}
    out = _render(o)
    for name in bench.ORT_NAMES:
        assert _row(out, f"in-process {name}")[1] == f"unavailable: {o['error']}"
    assert "Verdict" not in out
    assert _row(_render({"skipped": "--no-onnx"}), "in-process onnxruntime int8")[1] == "skipped (--no-onnx)"
    assert "onnxruntime" not in _render(None)  # a figures file from before the peer existed


def test_no_onnx_flag_skips_the_peer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_models_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    posts = tmp_path / "test.jsonl"
    posts.write_text(json.dumps({"text": "转发抽奖送三台手机"}, ensure_ascii=False) + "\n", encoding="utf-8")
    monkeypatch.setattr(bench, "inprocess_bench", lambda *a, **k: ({}, {}))
    called: list[tuple] = []
    monkeypatch.setattr(bench, "onnx_bench", lambda *a, **k: called.append(a) or {"error": "fake"})
    common = ["--models-dir", str(tiny_models_dir), "--posts", str(posts), "--no-http", "--aopc", "0",
              "--configs", "fp32"]
    assert bench.main([*common, "--no-onnx"]) == 0
    assert not called and "skipped (--no-onnx)" in capsys.readouterr().out
    assert bench.main(common) == 0
    assert len(called) == 1 and called[0][4] == posts  # the labelled posts: the same file
    assert "unavailable: fake" in capsys.readouterr().out
