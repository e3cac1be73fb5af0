"""Splits that tell the truth about the future.

feed (five Weibo feed crawls, 2023-12..2025-01): the latest posts are `test`, the ones before
them `validation`, the rest `train`; no author appears both in train and in a later split (their
train posts move to `excluded`). CCTV and CED are other domains: their later part is an
out-of-domain test (`ood_cctv`, `ood_ced`), their earlier part `aux_cctv` / `aux_ced`, used for
training only where a post has a motive annotation (their tiers measure one giant account and a
capped 2012 crawl, not ordinary posts).

The assignment is committed as data/splits/splits.tsv so every model is evaluated on the same posts.
"""

from __future__ import annotations

from pathlib import Path

from training.corpus.sources import REPO_ROOT

SPLIT_FILE = REPO_ROOT / "data" / "splits" / "splits.tsv"
FEED_TEST_FRACTION = 0.15
FEED_VAL_FRACTION = 0.10
OOD_TEST_FRACTION = 0.40


def _cutoff(dates: list[str], fraction: float) -> str:
    """The earliest date such that at most about `fraction` of posts fall on or after it."""
    dates = sorted(dates)
    return dates[int(len(dates) * (1 - fraction))]


def assign_splits(records: list[dict]) -> tuple[dict[str, str], dict[str, str]]:
    out: dict[str, str] = {}
    meta: dict[str, str] = {}
    feed = [r for r in records if r["domain"] == "feed"]
    test_from = _cutoff([r["created_at"] for r in feed], FEED_TEST_FRACTION)
    val_from = _cutoff([r["created_at"] for r in feed if r["created_at"] < test_from],
                       FEED_VAL_FRACTION / (1 - FEED_TEST_FRACTION))
    meta["feed_test_from"] = test_from
    meta["feed_validation_from"] = val_from
    later_authors: set[str] = set()
    for r in feed:
        if r["created_at"] >= test_from:
            out[r["post_id"]] = "test"
        elif r["created_at"] >= val_from:
            out[r["post_id"]] = "validation"
        if r["created_at"] >= val_from:
            later_authors.add(r["author"])
    for r in feed:
        if r["post_id"] not in out:
            out[r["post_id"]] = "excluded" if r["author"] in later_authors else "train"
    for domain in ("cctv", "ced"):
        rows = [r for r in records if r["domain"] == domain]
        ood_from = _cutoff([r["created_at"] for r in rows], OOD_TEST_FRACTION)
        meta[f"{domain}_ood_from"] = ood_from
        for r in rows:
            out[r["post_id"]] = f"ood_{domain}" if r["created_at"] >= ood_from else f"aux_{domain}"
    return out, meta


def write_split_file(path: Path, assignment: dict[str, str], meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {k}\t{v}" for k, v in sorted(meta.items())]
    lines += [f"{pid}\t{split}" for pid, split in sorted(assignment.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_split_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        pid, split = line.split("\t")
        out[pid] = split
    return out
