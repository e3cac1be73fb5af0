"""The corpus build on the real raw files: checksums, normalisation, dedup, split stability."""

import json
import shutil
from pathlib import Path

import pytest

from sharelens.errors import SharelensError
from sharelens.labels import TIERS
from training.corpus import sources as src
from training.corpus.build import build
from training.corpus.dedup import near_duplicate_groups
from training.corpus.splits import SPLIT_FILE, assign_splits, read_split_file

RAW = src.default_raw_dir()
pytestmark = pytest.mark.skipif(RAW is None, reason="no local mirror of the raw sources")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("build")
    report = build(out_dir=out)
    return out, report.to_dict()


def test_every_source_matches_its_pinned_checksum() -> None:
    for s in src.load_manifest():
        assert len(src.resolve(s, RAW, Path("/nonexistent"))) == s.files


def test_a_changed_file_is_an_error(tmp_path: Path) -> None:
    s = next(x for x in src.load_manifest() if x.parser == "weibo_feed")
    mirror = tmp_path / s.mirror_folder
    original = src.resolve(s, RAW, tmp_path)[0]
    target = mirror / original.relative_to(RAW / s.mirror_folder)
    target.parent.mkdir(parents=True)
    shutil.copy(original, target)
    with target.open("a", encoding="utf-8") as fh:
        fh.write("\n")
    with pytest.raises(SharelensError) as e:
        src.resolve(s, tmp_path, tmp_path / "cache")
    assert e.value.code == "E103"


def test_missing_mirror_without_fetch_says_what_to_do(tmp_path: Path) -> None:
    s = src.load_manifest()[0]
    with pytest.raises(SharelensError, match="FETCH=1") as e:
        src.resolve(s, tmp_path, tmp_path / "cache", allow_fetch=False)
    assert e.value.code == "E101"


def test_records_are_normalised_typed_and_tiered(built: tuple[Path, dict]) -> None:
    out, report = built
    rows = [json.loads(line) for line in (out / "jsonl" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == report["per_split"]["train"]
    for r in rows:
        assert isinstance(r["reposts"], int) and isinstance(r["likes"], int)
        assert r["engagement"] == r["reposts"] + r["comments"] + r["likes"]
        assert r["tier"] in TIERS
        assert "\u200b" not in r["text"] and "http://" not in r["text"] and "展开全文" not in r["text"]
        assert r["text"].strip() == r["text"] and r["text"]
    assert any(r["count_capped"] for r in rows)  # the "100万+" floor is flagged, not silently used
    assert any("[" in r["text"] and "]" in r["text"] for r in rows)  # emoji codes kept


def test_duplicates_are_reported_and_gone(built: tuple[Path, dict]) -> None:
    out, report = built
    assert report["same_id_merged"] > 0 and report["exact_text_dupes"] > 0 and report["near_text_dupes"] > 0
    ids, keys = set(), set()
    for path in (out / "jsonl").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            assert r["post_id"] not in ids
            ids.add(r["post_id"])
            keys.add(r["text"])
    assert len(ids) == report["kept"] == len(keys)


def test_near_duplicates_are_grouped() -> None:
    a = "今天北京下了好大的雪，大家出门注意安全，路上很滑，开车慢一点"
    groups = near_duplicate_groups([a, a + "！！", "完全不同的一段文字，讲的是上海的美食和旅游攻略"])
    assert groups == [[0, 1]]


def test_splits_are_stable_and_honest(built: tuple[Path, dict]) -> None:
    out, _ = built
    rows = []
    for path in (out / "jsonl").glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    recomputed, meta = assign_splits([{**r} for r in rows])
    committed = read_split_file(SPLIT_FILE)
    assert all(committed[r["post_id"]] == recomputed[r["post_id"]] for r in rows)
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    assert max(r["created_at"] for r in by["train"]) < min(r["created_at"] for r in by["test"])
    assert max(r["created_at"] for r in by["validation"]) < min(r["created_at"] for r in by["test"])
    assert not {r["author"] for r in by["train"]} & {r["author"] for r in by["test"] + by["validation"]}
    assert len([r for r in by["test"] if r["motive"]]) >= 400


def test_rebuild_is_byte_identical(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = built
    again = build(out_dir=tmp_path)
    assert again.fingerprint == report["fingerprint"]
    for path in (out / "jsonl").glob("*.jsonl"):
        assert path.read_bytes() == (tmp_path / "jsonl" / path.name).read_bytes()
