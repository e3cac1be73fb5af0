"""`sharelens score`: archive in, one table of scores out; bad rows rejected with reasons; a run
killed half-way resumes to the byte-identical output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharelens.labels import MOTIVES, TIERS
from sharelens.post import Context, Post
from sharelens.predictor import Predictor
from training.cli import main
from training.score import ScoreOptions, score_file

COLUMNS = (["id"] + [f"motive_{m}" for m in MOTIVES] + ["motive"] + [f"tier_{t}" for t in TIERS]
           + ["tier", "model_version", "context_used"])


def _texts(real_posts: list[str], n: int) -> list[str]:
    return [t[:300] for t in real_posts[:n]]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_csv_to_parquet_with_context_and_rejects(tmp_path: Path, predictor: Predictor, models: Path,
                                                 real_posts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    texts = _texts(real_posts, 12)
    rows = [{"text": t, "channel": "", "vip": "", "followers": "", "posted_at": ""} for t in texts]
    rows[1].update(channel="社会", vip="true", followers="1200", posted_at="2025-01-06T20:30:00+08:00")
    rows[3]["text"] = " \u200b\u3000 "
    rows[5]["text"] = "字" * 2001
    rows[7]["followers"] = "many"
    rows[9]["posted_at"] = "yesterday"
    src = _write_csv(tmp_path / "posts.csv", rows)
    out = tmp_path / "scores.parquet"
    assert main(["score", str(src), "-o", str(out), "--no-progress", "--chunk-size", "5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("scored 8 of 12 rows, 4 rejected") and "posts/s" in line
    table = pq.read_table(out)
    assert table.column_names == COLUMNS
    got = table.to_pylist()
    assert [r["id"] for r in got] == [0, 1, 2, 4, 6, 8, 10, 11]
    for r in got:
        assert sum(r[f"motive_{m}"] for m in MOTIVES) == pytest.approx(1.0, abs=1e-5)
        assert sum(r[f"tier_{t}"] for t in TIERS) == pytest.approx(1.0, abs=1e-5)
        assert r["motive"] in MOTIVES and r["tier"] in TIERS
        assert r["model_version"] == predictor.version
    used = set(got[1]["context_used"].split(","))
    assert {"channel", "vip", "followers", "posted_at"} <= used
    assert got[0]["context_used"] == ""
    # the motive head does not read context: the same as the bare text
    alone = predictor.predict([texts[1]])[0]
    assert got[1]["motive_" + MOTIVES[0]] == pytest.approx(float(alone.motive_probs[0]), abs=1e-4)
    with (tmp_path / "scores.parquet.rejects.csv").open(encoding="utf-8") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["id"], r["row"]) for r in rejects] == [("3", "3"), ("5", "5"), ("7", "7"), ("9", "9")]
    reasons = [r["reason"] for r in rejects]
    assert reasons[0] == "empty text" and "longer than 2000" in reasons[1]
    assert reasons[2].startswith("context.followers") and reasons[3].startswith("context.posted_at")
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_jsonl_to_csv_with_ids_and_renamed_context(tmp_path: Path, predictor: Predictor,
                                                    real_posts: list[str]) -> None:
    texts = _texts(real_posts, 6)
    src = tmp_path / "posts.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            rec = {"post_id": f"p{i}", "body": t, "blue_v": i % 2 == 0,
                   "author_history": {"posts": 10, "median_engagement": 3.5}}
            if i == 2:
                rec["blue_v"] = "yes"  # wrong type in JSON: rejected
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.write("not json\n")
        fh.write('{"post_id": "s", "body": "\\ud800 a lone surrogate"}\n')
    out = tmp_path / "scores.csv"
    opts = ScoreOptions(text_column="body", id_column="post_id", context_columns={"verified": "blue_v"})
    summary = score_file(src, out, predictor, opts, progress=False)
    assert (summary.rows, summary.scored, summary.rejected) == (8, 5, 3)
    with out.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [r["id"] for r in got] == ["p0", "p1", "p3", "p4", "p5"]
    assert all("author_history" in r["context_used"] and "verified" in r["context_used"] for r in got)
    with (tmp_path / "scores.csv.rejects.csv").open(encoding="utf-8") as fh:
        rejects = list(csv.reader(fh))
    assert rejects[0] == ["id", "row", "reason"]
    assert rejects[1][:2] == ["p2", "2"] and rejects[1][2].startswith("context.verified: must be true or false")
    assert rejects[2] == ["", "6", "not a JSON object"]
    assert rejects[3] == ["s", "7", "text contains invalid Unicode (a lone surrogate)"]


def test_resume_after_a_crash_is_byte_identical(tmp_path: Path, predictor: Predictor,
                                                real_posts: list[str]) -> None:
    texts = _texts(real_posts, 23)
    texts[4] = ""
    src = tmp_path / "posts.parquet"
    pq.write_table(pa.table({"text": texts, "channel": ["热门"] * len(texts)}), src)
    opts = ScoreOptions(chunk_size=5, batch_size=4)
    for ext in (".parquet", ".jsonl"):
        clean, resumed = tmp_path / f"clean{ext}", tmp_path / f"resumed{ext}"
        score_file(src, clean, predictor, opts, progress=False)

        def crash(k: int) -> None:
            if k == 2:
                raise RuntimeError("killed")

        with pytest.raises(RuntimeError):
            score_file(src, resumed, predictor, opts, progress=False, after_chunk=crash)
        parts = tmp_path / f"resumed{ext}.parts"
        assert sorted(p.name for p in parts.glob("part-*")) == [f"part-0000{k}.parquet" for k in range(3)]
        assert not resumed.exists()
        summary = score_file(src, resumed, predictor, opts, progress=False)
        assert (summary.chunks, summary.chunks_resumed, summary.rejected) == (5, 3, 1)
        assert resumed.read_bytes() == clean.read_bytes()
        assert not parts.exists()


def test_changed_options_start_over(tmp_path: Path, predictor: Predictor, real_posts: list[str]) -> None:
    src = _write_csv(tmp_path / "p.csv", [{"text": t} for t in _texts(real_posts, 6)])
    out = tmp_path / "o.parquet"

    def crash(k: int) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        score_file(src, out, predictor, ScoreOptions(chunk_size=3), progress=False, after_chunk=crash)
    summary = score_file(src, out, predictor, ScoreOptions(chunk_size=2), progress=False)
    assert (summary.chunks, summary.chunks_resumed, summary.scored) == (3, 0, 6)


@pytest.mark.parametrize("args, code", [
    (["missing.csv", "-o", "out.parquet"], "E470"),
    (["posts.txt", "-o", "out.parquet"], "E471"),
    (["posts.csv", "-o", "out.xlsx"], "E471"),
    (["posts.csv", "-o", "out.parquet", "--text-column", "body"], "E472"),
    (["posts.csv", "-o", "out.parquet", "--context-columns", "vipp=x"], "E473"),
    (["empty.csv", "-o", "out.parquet"], "E475"),
    (["posts.csv", "-o", "out.parquet", "--ray-actors", "2"], "E473"),
    (["posts.csv", "-o", "out.parquet", "--engine", "ray", "--ray-actors", "0"], "E473"),
])
def test_bad_usage_is_one_line_exit_2(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], args: list[str], code: str) -> None:
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "posts.csv", [{"text": "一条微博"}])
    (tmp_path / "posts.txt").write_text("text\n一条微博\n", encoding="utf-8")
    _write_csv(tmp_path / "empty.csv", [{"text": " "}])
    assert main(["score", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error {code}:"), err
    assert not (tmp_path / "out.parquet").exists()


def test_engine_ray_without_ray_is_one_line_e476(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "posts.csv", [{"text": "一条微博"}])
    assert main(["score", "posts.csv", "-o", "out.parquet", "--engine", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error E476:") and "sharelens[ray]" in err[0], err
    assert not (tmp_path / "out.parquet").exists()


def test_scoring_never_imports_ray() -> None:
    code = ("import sys, training.cli, training.score, training.score_ray; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_ray_rows_carry_posts_as_plain_values() -> None:
    from training.score_ray import chunk_posts, chunk_row

    posts = [Post("一条微博"), Post("转发", Context.from_mapping({
        "channel": "社会", "vip": True, "verified": False, "followers": 1200, "posted_at": "2025-01-06T20:30:00+08:00",
        "author_history": {"posts": 10, "median_engagement": 3.5}}))]
    row = chunk_row(7, posts)
    assert row["chunk"] == 7 and all(isinstance(c, str) for c in row["contexts"])
    assert json.loads(json.dumps(row)) == row
    assert chunk_posts(row["texts"], row["contexts"]) == posts
