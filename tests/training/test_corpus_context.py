"""Context fields, author history and split bookkeeping of the corpus build, on small inputs."""

import json
from pathlib import Path

import pytest

from sharelens.errors import SharelensError
from training.corpus import sources as src
from training.corpus.build import age_at_crawl_days, attach_author_history, resolve_splits
from training.corpus.parsers import _ordinary_user, avatar_expiry, ordinary, spam_time, weibo_spam
from training.corpus.splits import read_split_file, read_split_meta, write_split_file

RAW = src.default_raw_dir()


def test_avatar_expiry_is_china_time() -> None:
    url = "https://tvax4.sinaimg.cn/crop.0.0.828.828.180/x.jpg?KID=imgbed,tva&Expires=1736336841&ssig=V%2Bo"
    assert avatar_expiry(url) == "2025-01-08T19:47:21+08:00"
    assert avatar_expiry("https://tvax4.sinaimg.cn/x.jpg") is None and avatar_expiry(None) is None


def test_spam_times() -> None:
    assert spam_time("2015-08-10 16:22:29\xa0来自微博 weibo.com") == "2015-08-10T16:22:29+08:00"
    assert spam_time("05月14日 12:30\xa0来自iPhone") == "2017-05-14T12:30:00+08:00"  # the crawl's year
    assert spam_time("今天 13:32\xa0来自iPhone 6s") is None
    assert spam_time("9分钟前\xa0来自iPhone 6s") is None


def test_ordinary_users_keep_only_what_the_tier_may_use() -> None:
    row = {"user_name": "某人", "user_description": "bio", "user_gender": "f", "user_location": "北京",
           "user_followers_cnt": 175, "user_verified": "club", "user_verified_tag": None, "user_vip_type": "SVIP_1"}
    assert _ordinary_user(row) == {"followers": 175, "verified": False, "vip": None}
    assert _ordinary_user({**row, "user_verified": None})["verified"] is False
    assert _ordinary_user({**row, "user_verified": True})["verified"] is True
    assert _ordinary_user({**row, "user_followers_cnt": None})["followers"] is None


@pytest.mark.mirror
def test_new_parsers_on_the_real_files() -> None:
    by_id = {s.id: s for s in src.load_manifest()}
    o = by_id["llj0824/weibo-research-guanghua"]
    rows = list(ordinary(src.resolve(o, RAW, Path("/nonexistent")), o.id))
    assert len(rows) == 4701 and len({r["post_id"] for r in rows}) == 4701
    assert all(r["post_id"].startswith("ord_") and r["author"].startswith("weibo:") for r in rows)
    assert {r["observed_at"] for r in rows} == {"2025-05-31", "2025-06-15"}
    assert all(r["posted_at"].endswith("+08:00") and r["posted_at"][:10] == r["created_at"] for r in rows)
    assert not {"user_name", "user_description", "user_gender", "user_location", "post_geo"} & set(rows[0])
    s = by_id["PsYear/weibo_spam"]
    paths = src.resolve(s, RAW, Path("/nonexistent"))[:20]
    rows = list(weibo_spam(paths, s.id))
    first = json.loads(paths[0].read_text(encoding="utf-8"))
    assert [r["post_id"] for r in rows[: len(first["weibo"])]] == [
        f"spam_{first['id']}_{i}" for i in range(len(first["weibo"]))]
    assert all(r["followers"] is not None and r["verified"] is None and r["vip"] is None for r in rows)


def _rec(pid: str, author: str, date: str, split: str, e: int, domain: str = "feed") -> dict:
    return {"post_id": pid, "author": author, "created_at": date, "split": split, "engagement": e,
            "domain": domain}


def test_author_history_is_strictly_earlier_and_training_period_only() -> None:
    recs = [
        _rec("a1", "A", "2024-12-01", "excluded", 10),
        _rec("a2", "A", "2024-12-03", "excluded", 30),
        _rec("a3", "A", "2025-01-02", "validation", 1000),
        _rec("a4", "A", "2025-01-02", "validation", 2000),  # same day as a3
        _rec("a5", "A", "2025-01-07", "test", 5),
        _rec("b1", "B", "2024-11-01", "train", 7),
        _rec("b2", "B", "2024-11-01", "train", 9),  # same day: not history of each other
        _rec("b3", "B", "2024-11-02", "train", 11),
        _rec("c1", "C", "2025-06-01", "ordinary_train", 4, "ordinary"),
        _rec("c2", "C", "2025-06-06", "ordinary_validation", 400, "ordinary"),
        _rec("c3", "C", "2025-06-10", "ordinary_test", 1, "ordinary"),
        _rec("x1", "B", "2020-01-01", "aux_cctv", 5, "cctv"),
        _rec("x2", "B", "2020-01-02", "aux_cctv", 5, "cctv"),
    ]
    attach_author_history(recs)
    h = {r["post_id"]: r["author_history"] for r in recs}
    assert h["a1"] is None and h["a2"] == {"posts": 1, "median_engagement": 10.0}
    assert h["a3"] == h["a4"] == h["a5"] == {"posts": 2, "median_engagement": 20.0}  # never a3/a4 themselves
    assert h["b1"] is None and h["b2"] is None and h["b3"] == {"posts": 2, "median_engagement": 8.0}
    assert h["c1"] is None
    assert h["c2"] == h["c3"] == {"posts": 1, "median_engagement": 4.0}  # not the validation post c2
    assert h["x1"] is None and h["x2"] is None  # no pool for CCTV (nor CED, spam)


def test_age_at_crawl() -> None:
    assert age_at_crawl_days("2025-01-08", "2025-01-08T19:47:21+08:00") == pytest.approx(7.79 / 24, abs=1e-3)
    assert age_at_crawl_days("2025-06-14T12:00:00+08:00", "2025-06-15") == pytest.approx(0.5)
    assert age_at_crawl_days("2020-05-31T23:54:00+08:00", None) is None


def _domain_recs() -> list[dict]:
    feed = [{"post_id": f"f{i}", "domain": "feed", "author": f"u{i % 7}", "created_at": f"2024-12-{i + 1:02d}"}
            for i in range(20)]
    ordinary_ = [{"post_id": f"ord_{i}", "domain": "ordinary", "author": f"o{i % 3}",
                  "created_at": f"2025-06-{i + 1:02d}"} for i in range(20)]
    spam = [{"post_id": f"spam_9_{i}", "domain": "spam", "author": "weibo:9", "created_at": "2016-01-01"}
            for i in range(5)]
    return feed + ordinary_ + spam


def test_a_new_domain_is_appended_to_the_split_file_without_touching_its_lines(tmp_path: Path) -> None:
    recs = _domain_recs()
    path = tmp_path / "splits.tsv"
    write_split_file(path, {r["post_id"]: "train" for r in recs if r["domain"] == "feed"},
                     {"feed_test_from": "2099-01-01", "feed_validation_from": "2098-01-01"})
    before = path.read_text(encoding="utf-8").splitlines()
    out, appended = resolve_splits(recs, path, resplit=False)
    after = path.read_text(encoding="utf-8").splitlines()
    assert appended == ["ordinary", "spam"]
    assert set(before) <= set(after) and len(after) == len(before) + 20 + 3  # 20 ids, 3 meta lines
    assert all(out[f"f{i}"] == "train" for i in range(20))  # the old assignment, not a recomputed one
    assert {out[f"spam_9_{i}"] for i in range(5)} == {"aux_spam"}
    assert read_split_meta(path)["spam_split"] == "aux_spam"
    assert read_split_file(path)["spam_123_0"] == "aux_spam"  # a bare spam id resolves by its prefix
    assert [out[f"ord_{i}"] for i in range(20)] == ["ordinary_train"] * 15 + ["ordinary_validation"] * 2 + [
        "ordinary_test"] * 3
    again, appended = resolve_splits(recs, path, resplit=False)
    assert appended == [] and again == out and path.read_text(encoding="utf-8").splitlines() == after


def test_a_post_missing_from_a_known_domain_is_an_error(tmp_path: Path) -> None:
    recs = _domain_recs()
    path = tmp_path / "splits.tsv"
    resolve_splits(recs, path, resplit=True)
    recs.append({"post_id": "f99", "domain": "feed", "author": "u1", "created_at": "2024-12-30"})
    with pytest.raises(SharelensError) as e:
        resolve_splits(recs, path, resplit=False)
    assert e.value.code == "E130"
