"""The corpus build on the real raw files: checksums, normalisation, dedup, split stability."""

import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from sharelens.errors import SharelensError
from sharelens.labels import TIERS
from training.corpus import sources as src
from training.corpus.build import (
    HISTORY_POOLS,
    Prepared,
    attach_author_history,
    build,
    load_annotations,
    prepare,
    write,
)
from training.corpus.dedup import dedup_key, near_duplicate_groups
from training.corpus.splits import SPLIT_FILE, assign_splits, read_split_file, read_split_meta, split_of

RAW = src.default_raw_dir()
pytestmark = pytest.mark.mirror

# The built corpus, pinned: a change here is a change of the data every model is trained and
# evaluated on, and must be deliberate (update data/README.md with it). The content fingerprint
# leaves out the motive labels, which the annotators extend without changing the corpus.
EXPECTED_CONTENT_FINGERPRINT = "011aa9c47e538ec4756e26cfcf885320319370583249e9961b4aebeca75f9a14"
EXPECTED_SPLITS = {
    "aux_cctv": 4691, "aux_ced": 1841, "aux_spam": 62465, "ood_cctv": 3138, "ood_ced": 1230,
    "ordinary_test": 601, "ordinary_train": 2971, "ordinary_validation": 427,
    "test": 778, "train": 2831, "validation": 442,
}
OLD_DOMAINS = ("feed", "cctv", "ced")  # the 14,951 posts of the corpus before the ordinary and spam sources
OLD_POSTS = 14_951


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return prepare(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def built(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("build")
    report = write(prepared, out)
    return out, report.to_dict()


@pytest.fixture(scope="module")
def rows(built: tuple[Path, dict]) -> list[dict]:
    out, _ = built
    return [json.loads(line) for path in sorted((out / "jsonl").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


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


def test_the_corpus_is_the_pinned_one(built: tuple[Path, dict]) -> None:
    _, report = built
    assert report["per_split"] == EXPECTED_SPLITS
    assert report["content_fingerprint"] == EXPECTED_CONTENT_FINGERPRINT
    assert report["splits_appended"] == []  # every domain is fixed in the committed split file


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


def test_duplicates_are_reported_and_gone(built: tuple[Path, dict], rows: list[dict]) -> None:
    _, report = built
    assert report["same_id_merged"] > 0 and report["exact_text_dupes"] > 0 and report["near_text_dupes"] > 0
    ids = [r["post_id"] for r in rows]
    keys = {r["text"] for r in rows}
    assert len(ids) == len(set(ids)) == report["kept"] == len(keys)
    # the existing corpus deduplicates exactly as before the new sources came in
    assert report["dedup"]["feed+cctv+ced"] == {"exact_within": 240, "near_within": 250}
    for domain in ("ordinary", "spam"):
        assert set(report["dedup"][domain]) == {"exact_vs_prior", "exact_within", "near_vs_prior", "near_within"}
    assert report["undated"] == {"PsYear/weibo_spam": 337}


def test_new_sources_never_displace_an_existing_post(rows: list[dict]) -> None:
    """The 14,951 posts, their splits and their annotations are what they were; a new post that
    duplicates one of them is the one dropped."""
    old = [r for r in rows if r["domain"] in OLD_DOMAINS]
    committed = read_split_file(SPLIT_FILE)
    excluded = sum(1 for split in committed.values() if split == "excluded")
    assert len(old) == OLD_POSTS == sum(1 for split in committed.values()
                                        if split.split("_")[0] not in ("ordinary", "excluded"))
    assert excluded == 474
    assert all(committed[r["post_id"]] == r["split"] for r in old)
    old_keys = {dedup_key(r["text"]) or r["text"] for r in old}
    assert not [r for r in rows if r["domain"] not in OLD_DOMAINS and (dedup_key(r["text"]) or r["text"]) in old_keys]
    labels = load_annotations()
    assert all(r["motive"] == labels.get(r["post_id"], {}).get("motive") for r in old)
    assert sum(r["motive"] is not None for r in old) >= 2982


HELD_OUT = {"validation", "test", "ordinary_validation", "ordinary_test"}


def test_author_history_sees_only_strictly_earlier_training_period_posts(prepared: Prepared) -> None:
    """Recomputed by brute force from the allowed pool (same domain and author, a training-period
    split, an earlier date): no record's history holds itself, a same-day or later post, or a
    validation/test post; and changing every held-out post's counts changes no history."""
    records = prepared.records
    pool: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if r["split"] in HISTORY_POOLS.get(r["domain"], ()):
            pool[(r["domain"], r["author"])].append(r)
    for splits in HISTORY_POOLS.values():
        assert not splits & HELD_OUT
    with_history = 0
    for r in records:
        if r["domain"] not in HISTORY_POOLS:
            assert r["author_history"] is None
            continue
        earlier = [p for p in pool[(r["domain"], r["author"])]
                   if p["created_at"] < r["created_at"] and p is not r and p["split"] not in HELD_OUT]
        if not earlier:
            assert r["author_history"] is None, r["post_id"]
            continue
        with_history += 1
        assert r["author_history"] == {
            "posts": len(earlier), "median_engagement": float(statistics.median(p["engagement"] for p in earlier))
        }, r["post_id"]
    assert with_history > 1000
    # held-out posts' engagement must not leak into any history
    leaked = [{**r, "engagement": r["engagement"] + 10**9} if r["split"] in HELD_OUT else dict(r) for r in records]
    attach_author_history(leaked)
    assert [r["author_history"] for r in leaked] == [r["author_history"] for r in records]
    # validation/test posts do get a history (from the earlier, excluded posts of their authors)
    held = [r for r in records if r["split"] in HELD_OUT]
    assert sum(r["author_history"] is not None for r in held if r["domain"] == "feed") > 100


def test_near_duplicates_are_grouped() -> None:
    a = "今天北京下了好大的雪，大家出门注意安全，路上很滑，开车慢一点"
    groups = near_duplicate_groups([a, a + "！！", "完全不同的一段文字，讲的是上海的美食和旅游攻略"])
    assert groups == [[0, 1]]


def test_splits_are_stable_and_honest(rows: list[dict]) -> None:
    recomputed, meta = assign_splits([{**r} for r in rows])
    committed = read_split_file(SPLIT_FILE)
    committed_meta = read_split_meta(SPLIT_FILE)
    assert all(committed[r["post_id"]] == split_of(r, recomputed, meta) == r["split"] for r in rows)
    assert {k: committed_meta[k] for k in meta} == meta
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    assert max(r["created_at"] for r in by["train"]) < min(r["created_at"] for r in by["test"])
    assert max(r["created_at"] for r in by["validation"]) < min(r["created_at"] for r in by["test"])
    assert not {r["author"] for r in by["train"]} & {r["author"] for r in by["test"] + by["validation"]}
    assert len([r for r in by["test"] if r["motive"]]) >= 400
    # ordinary accounts: split by time only (the same accounts on both sides is the point)
    o = {s: [r for r in rows if r["split"] == s] for s in ("ordinary_train", "ordinary_validation", "ordinary_test")}
    assert max(r["created_at"] for r in o["ordinary_train"]) < min(r["created_at"] for r in o["ordinary_validation"])
    assert max(r["created_at"] for r in o["ordinary_validation"]) < min(r["created_at"] for r in o["ordinary_test"])
    assert {r["domain"] for rs in o.values() for r in rs} == {"ordinary"}
    # the spam crawl is one motive-only split, by a rule rather than ~60k listed ids
    assert {r["split"] for r in rows if r["domain"] == "spam"} == {"aux_spam"}
    assert committed_meta["spam_split"] == "aux_spam"
    assert not any(pid.startswith("spam_") for pid in committed)


def test_rebuild_is_byte_identical(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = built
    again = build(out_dir=tmp_path)
    assert again.fingerprint == report["fingerprint"]
    assert again.content_fingerprint == report["content_fingerprint"]
    for path in (out / "jsonl").glob("*.jsonl"):
        assert path.read_bytes() == (tmp_path / "jsonl" / path.name).read_bytes()


def test_context_fields_are_typed_and_unknown_is_null(built: tuple[Path, dict], rows: list[dict]) -> None:
    import datasets

    out, report = built
    for r in rows:
        assert r["channel"] is None or (isinstance(r["channel"], str) and r["channel"])
        assert r["vip"] is None or isinstance(r["vip"], bool)
        assert r["verified"] is None or isinstance(r["verified"], bool)
        assert r["followers"] is None or (isinstance(r["followers"], int) and r["followers"] >= 0)
        assert r["posted_at"] and r["posted_at"][:10] == r["created_at"]
        assert r["observed_at"] is None or r["observed_at"] >= r["posted_at"][:10]
    cov = report["coverage"]
    assert cov["feed"]["channel"] == cov["feed"]["observed_at"] == cov["feed"]["records"]
    assert cov["cctv"]["channel"] == cov["ced"]["channel"] == 0  # was "" before: unknown is null
    assert cov["ordinary"]["followers"] == cov["ordinary"]["verified"] == cov["ordinary"]["records"]
    assert cov["spam"]["author_history"] == cov["cctv"]["author_history"] == 0
    # explicit features: splits whose columns are all null still concatenate
    dd = datasets.load_from_disk(str(out / "corpus"))
    both = datasets.concatenate_datasets([dd["ood_cctv"], dd["ordinary_test"], dd["aux_spam"].select(range(10))])
    assert both.features["author_history"]["median_engagement"].dtype == "float64"
    assert both.features["vip"].dtype == "bool" and both.features["motive"].dtype == "string"
