"""Splits that tell the truth about the future.

feed (five Weibo feed crawls, 2023-12..2025-01): the latest posts are `test`, the ones before
them `validation`, the rest `train`; no author appears both in train and in a later split (their
train posts move to `excluded`). CCTV and CED are other domains: their later part is an
out-of-domain test (`ood_cctv`, `ood_ced`), their earlier part `aux_cctv` / `aux_ced`, used for
training only where a post has a motive annotation (their tiers measure one giant account and a
capped 2012 crawl, not ordinary posts).

ordinary (226 ordinary accounts, 2025-01..06): split by time within the domain like the feed
(`ordinary_train` / `ordinary_validation` / `ordinary_test`), but an author MAY appear in several
of them: the domain is there to predict an account's next post from its own earlier ones, so the
same accounts on both sides of the time cut is the point, not a leak (the cut is in time).

spam (PsYear/weibo_spam, 2011..2017): motive-only; the whole domain is `aux_spam` by a rule
recorded as a meta line (`# spam_split	aux_spam`) instead of ~60k post ids.

sample (data/sample: the committed, openly licensed CCTV sample that `make test` trains on when the
raw mirror is absent): one account, so split by time only (`train` / `validation` / `test`), in its
own split file data/sample/splits.tsv.

The assignment is committed as data/splits/splits.tsv so every model is evaluated on the same posts.
Meta lines (`# key<TAB>value`) record the cut-offs and whole-domain rules.
"""

from __future__ import annotations

from pathlib import Path

from sharelens.paths import SPLIT_FILE  # noqa: F401 - re-exported

FEED_TEST_FRACTION = 0.15
FEED_VAL_FRACTION = 0.10
OOD_TEST_FRACTION = 0.40
ORDINARY_TEST_FRACTION = 0.15
ORDINARY_VAL_FRACTION = 0.10
# The committed sample (data/sample, tests and first looks): one account, split by time only.
SAMPLE_TEST_FRACTION = 0.20
SAMPLE_VAL_FRACTION = 0.20
# Domains assigned as a whole: meta line `# <domain>_split<TAB><split>`; their post ids start with
# the prefix, so that a bare id (an annotation, a lookup) still resolves to its split.
WHOLE_DOMAIN_SPLITS = {"spam": "aux_spam"}
WHOLE_DOMAIN_ID_PREFIX = {"spam": "spam_"}


def _cutoff(dates: list[str], fraction: float) -> str:
    """The earliest date such that at most about `fraction` of posts fall on or after it."""
    dates = sorted(dates)
    return dates[int(len(dates) * (1 - fraction))]


def _time_split(rows: list[dict], test_fraction: float, val_fraction: float) -> tuple[str, str]:
    test_from = _cutoff([r["created_at"] for r in rows], test_fraction)
    val_from = _cutoff([r["created_at"] for r in rows if r["created_at"] < test_from],
                       val_fraction / (1 - test_fraction))
    return test_from, val_from


def assign_splits(records: list[dict]) -> tuple[dict[str, str], dict[str, str]]:
    """(post_id -> split, meta) for every domain present in `records`."""
    out: dict[str, str] = {}
    meta: dict[str, str] = {}
    present = {r["domain"] for r in records}
    if "feed" in present:
        feed = [r for r in records if r["domain"] == "feed"]
        test_from, val_from = _time_split(feed, FEED_TEST_FRACTION, FEED_VAL_FRACTION)
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
        if domain not in present:
            continue
        rows = [r for r in records if r["domain"] == domain]
        ood_from = _cutoff([r["created_at"] for r in rows], OOD_TEST_FRACTION)
        meta[f"{domain}_ood_from"] = ood_from
        for r in rows:
            out[r["post_id"]] = f"ood_{domain}" if r["created_at"] >= ood_from else f"aux_{domain}"
    if "ordinary" in present:
        rows = [r for r in records if r["domain"] == "ordinary"]
        test_from, val_from = _time_split(rows, ORDINARY_TEST_FRACTION, ORDINARY_VAL_FRACTION)
        meta["ordinary_test_from"] = test_from
        meta["ordinary_validation_from"] = val_from
        for r in rows:  # authors may appear in several splits (see the module docstring)
            out[r["post_id"]] = (
                "ordinary_test" if r["created_at"] >= test_from
                else "ordinary_validation" if r["created_at"] >= val_from
                else "ordinary_train"
            )
    if "sample" in present:
        rows = [r for r in records if r["domain"] == "sample"]
        test_from, val_from = _time_split(rows, SAMPLE_TEST_FRACTION, SAMPLE_VAL_FRACTION)
        meta["sample_test_from"] = test_from
        meta["sample_validation_from"] = val_from
        for r in rows:
            out[r["post_id"]] = ("test" if r["created_at"] >= test_from
                                 else "validation" if r["created_at"] >= val_from else "train")
    for domain, split in WHOLE_DOMAIN_SPLITS.items():
        if domain in present:
            meta[f"{domain}_split"] = split
    return out, meta


def split_of(record: dict, assignment: dict[str, str], meta: dict[str, str]) -> str | None:
    """A record's split: its listed line, else its domain's whole-domain rule, else None."""
    listed = assignment.get(record["post_id"])
    return listed if listed is not None else meta.get(f"{record['domain']}_split")


def covered_domains(records: list[dict], assignment: dict[str, str], meta: dict[str, str]) -> set[str]:
    """Domains the split file already fixes: a listed post or a meta line `<domain>_…`."""
    covered = {r["domain"] for r in records if r["post_id"] in assignment}
    domains = {r["domain"] for r in records}
    covered |= {d for d in domains if any(k.startswith(f"{d}_") for k in meta)}
    return covered


def write_split_file(path: Path, assignment: dict[str, str], meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {k}\t{v}" for k, v in sorted(meta.items())]
    lines += [f"{pid}\t{split}" for pid, split in sorted(assignment.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_split_meta(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# ") and "\t" in line:
            key, value = line[2:].split("\t", 1)
            out[key.strip()] = value.strip()
    return out


class SplitAssignment(dict):
    """post_id -> split as listed in the file. `assignment[pid]` also resolves an unlisted id of a
    whole-domain rule by its prefix (`spam_…` -> aux_spam); `get` and `in` see listed ids only."""

    def __init__(self, listed: dict[str, str], prefix_rules: dict[str, str]) -> None:
        super().__init__(listed)
        self.prefix_rules = prefix_rules

    def __missing__(self, pid: str) -> str:
        for prefix, split in self.prefix_rules.items():
            if pid.startswith(prefix):
                return split
        raise KeyError(pid)


def read_split_file(path: Path) -> SplitAssignment:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        pid, split = line.split("\t")
        out[pid] = split
    meta = read_split_meta(path)
    rules = {prefix: meta[f"{d}_split"] for d, prefix in WHOLE_DOMAIN_ID_PREFIX.items() if f"{d}_split" in meta}
    return SplitAssignment(out, rules)
