"""`sharelens score --engine ray`: on a local Ray with two actors, the same output as the local
engine row for row (the same file, byte for byte), the same rejects, and a run killed half-way
resumes to the same file."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from sharelens.predictor import Predictor  # noqa: E402
from training.cli import main  # noqa: E402
from training.score import RayOptions, ScoreOptions, score_file  # noqa: E402
from training.score_ray import RayEngine  # noqa: E402

TWO = RayOptions(actors=2)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of two CPUs for the module (the engine joins it and leaves it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


def _posts_csv(path: Path, real_posts: list[str], n: int) -> Path:
    """Real posts of all lengths, some with context, some rejected."""
    rows = [{"post_id": f"w{i}", "text": t[: 20 + 37 * i % 400], "channel": "", "vip": "", "followers": "",
             "posted_at": ""} for i, t in enumerate(real_posts[:n])]
    for i in range(1, n, 4):
        rows[i].update(channel=["社会", "热门", "明星"][i % 3], vip="true" if i % 8 == 1 else "false",
                       followers=str(37 * i), posted_at=f"2025-01-{1 + i % 28:02d}T20:30:00+08:00")
    rows[3]["text"] = " \u200b "
    rows[10]["followers"] = "many"
    rows[17]["text"] = "字" * 2001
    for i in range(30, 36):  # a whole chunk of 5 rejected: an empty part, never sent to Ray
        rows[i]["text"] = ""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_ray_cli_output_and_rejects_equal_the_local_engine(tmp_path: Path, local_ray, models: Path,
                                                           real_posts: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = _posts_csv(tmp_path / "posts.csv", real_posts, 48)
    common = ["--no-progress", "--id-column", "post_id", "--chunk-size", "5", "--batch-size", "4"]
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["score", str(src), "-o", str(local), *common]) == 0
    assert main(["score", str(src), "-o", str(remote), *common, "--engine", "ray", "--ray-actors", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("scored 39 of 48 rows, 9 rejected") and lines[-1].endswith(str(remote))
    a, b = pq.read_table(local), pq.read_table(remote)
    assert b.num_rows == 39 and b.column_names == a.column_names
    assert b["id"].to_pylist() == a["id"].to_pylist()
    assert b["motive"].to_pylist() == a["motive"].to_pylist() and b["tier"].to_pylist() == a["tier"].to_pylist()
    assert b["context_used"].to_pylist() == a["context_used"].to_pylist()
    assert any(b["context_used"].to_pylist())
    assert a.equals(b)  # every probability bit for bit
    assert remote.read_bytes() == local.read_bytes()
    assert ((tmp_path / "ray.parquet.rejects.csv").read_bytes()
            == (tmp_path / "local.parquet.rejects.csv").read_bytes())
    assert ray.is_initialized()  # a Ray the engine did not start is left running


def test_ray_resume_after_a_crash_is_the_local_file(tmp_path: Path, local_ray, tiny_bundle: Path,
                                                    predictor: Predictor, real_posts: list[str]) -> None:
    texts = [t[: 10 + 53 * i % 500] for i, t in enumerate(real_posts[:23])]
    texts[4] = ""
    src = tmp_path / "posts.parquet"
    pq.write_table(pa.table({"text": texts, "channel": ["热门", None, "社会"] * 7 + ["明星", None]}), src)
    opts = ScoreOptions(chunk_size=5, batch_size=4)
    clean, resumed = tmp_path / "clean.jsonl", tmp_path / "resumed.jsonl"
    score_file(src, clean, predictor, opts, progress=False)

    def crash(k: int) -> None:
        if k == 2:
            raise RuntimeError("killed")

    with RayEngine(tiny_bundle, options=TWO) as engine, pytest.raises(RuntimeError, match="killed"):
        score_file(src, resumed, None, opts, progress=False, after_chunk=crash, engine=engine)
    parts = tmp_path / "resumed.jsonl.parts"
    assert sorted(p.name for p in parts.glob("part-*")) == [f"part-0000{k}.parquet" for k in range(3)]
    assert not resumed.exists()
    with RayEngine(tiny_bundle, options=TWO) as engine:
        summary = score_file(src, resumed, None, opts, progress=False, engine=engine)
    assert (summary.chunks, summary.chunks_resumed, summary.scored, summary.rejected) == (5, 3, 22, 1)
    assert resumed.read_bytes() == clean.read_bytes()
    assert ((tmp_path / "resumed.jsonl.rejects.csv").read_bytes()
            == (tmp_path / "clean.jsonl.rejects.csv").read_bytes())
    assert not parts.exists()


@pytest.mark.parametrize("case, code", [("missing", "E210"), ("other version", "E478")])
def test_an_actor_without_the_drivers_bundle_stops_the_run(tmp_path: Path, local_ray, tiny_bundle: Path,
                                                           real_posts: list[str], case: str, code: str) -> None:
    """An actor that cannot load the model (the bundle is not at that path on its node), or loads
    another version from it, stops the run with one error line instead of hanging or mixing models."""
    from sharelens.errors import SharelensError

    bundle = shutil.copytree(tiny_bundle, tmp_path / "sharelens" / tiny_bundle.name)
    src = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [t[:80] for t in real_posts[:6]]}), src)
    engine = RayEngine(bundle, options=RayOptions(actors=1))
    if case == "missing":
        shutil.rmtree(bundle)
    else:
        engine._version = "v0099-20261130"  # what the driver saw there before the bundle changed
    with engine, pytest.raises(SharelensError) as err:
        score_file(src, tmp_path / "o.parquet", None, ScoreOptions(chunk_size=3), progress=False, engine=engine)
    assert err.value.code == code and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "o.parquet").exists()
