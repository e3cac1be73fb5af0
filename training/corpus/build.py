"""`make data`: raw sources -> normalised, deduplicated records -> fixed splits -> datasets on disk.

Steps (each reported): parse every verified source; normalise texts; drop empty texts; merge the
same post id seen in several crawls (keep the most mature snapshot: highest engagement); drop
exact and near-duplicate texts across posts (keep the earliest post); assign splits from the
committed split file (or compute them with --resplit); attach the committed motive annotations;
write a `datasets.DatasetDict` plus one JSONL file per split, and a build report.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from sharelens.errors import SharelensError
from sharelens.labels import COUNT_FLOOR, MOTIVES, SPEC_VERSION, engagement, tier_of
from sharelens.text import normalise
from training.corpus import sources as src
from training.corpus.dedup import dedup_key, near_duplicate_groups
from training.corpus.parsers import PARSERS
from training.corpus.splits import SPLIT_FILE, assign_splits, read_split_file, write_split_file

DATA_DIR = src.REPO_ROOT / "data"
BUILD_DIR = DATA_DIR / "build"
ANNOTATIONS = DATA_DIR / "annotations" / "motives.csv"
WEAK_LABELS = DATA_DIR / "annotations" / "weak_motives.csv"

FIELDS = (
    "source", "post_id", "text", "created_at", "reposts", "comments", "likes", "engagement", "tier",
    "count_capped", "has_link", "truncated", "author", "channel", "domain", "split",
    "motive", "motive_secondary", "motive_annotator",
)


@dataclass
class BuildReport:
    parsed: dict[str, int]
    empty_text: int
    same_id_merged: int
    exact_text_dupes: int
    near_text_dupes: int
    kept: int
    per_split: dict[str, int]
    per_source: dict[str, int]
    per_tier: dict[str, dict[str, int]]
    per_motive: dict[str, dict[str, int]]
    fingerprint: str

    def to_dict(self) -> dict:
        return self.__dict__


def load_annotations(path: Path = ANNOTATIONS) -> dict[str, dict]:
    """Final (adjudicated) motive labels: post_id -> {motive, motive_secondary, annotator}."""
    if not path.exists():
        return {}
    out: dict[str, dict] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            motive = row["motive"].strip()
            second = (row.get("motive_secondary") or "").strip() or None
            for m in (motive, second):
                if m is not None and m not in MOTIVES:
                    raise SharelensError("E120", f"{path.name}: post {row['post_id']}: unknown motive {m!r}")
            if row.get("spec_version", SPEC_VERSION) != SPEC_VERSION:
                raise SharelensError("E121", f"{path.name}: post {row['post_id']} was labelled under "
                                     f"{row['spec_version']}, the spec is {SPEC_VERSION}")
            out[row["post_id"]] = {"motive": motive, "motive_secondary": second,
                                   "motive_annotator": row.get("annotator", "")}
    return out


def collect(raw_dir: Path | None, cache_dir: Path, allow_fetch: bool) -> tuple[list[dict], dict[str, int]]:
    records: list[dict] = []
    parsed: dict[str, int] = {}
    for source in tqdm(src.load_manifest(), desc="sources", unit="source"):
        paths = src.resolve(source, raw_dir, cache_dir, allow_fetch)
        rows = list(PARSERS[source.parser](paths, source.id))
        parsed[source.id] = len(rows)
        for r in rows:
            r["domain"] = source.domain
        records.extend(rows)
    return records, parsed


def normalise_records(records: list[dict]) -> tuple[list[dict], int]:
    kept, empty = [], 0
    for r in records:
        n = normalise(r.pop("raw_text"))
        if not n.text:
            empty += 1
            continue
        r["text"] = n.text
        r["has_link"] = n.has_link
        r["truncated"] = n.truncated
        r["count_capped"] = COUNT_FLOOR in (r["reposts"], r["comments"], r["likes"])
        r["engagement"] = engagement(r["reposts"], r["comments"], r["likes"])
        r["tier"] = tier_of(r["engagement"])
        kept.append(r)
    return kept, empty


def merge_same_id(records: list[dict]) -> tuple[list[dict], int]:
    by_id: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_id[r["post_id"]].append(r)
    merged = []
    for rows in by_id.values():
        # The most mature snapshot of a post is the one with the most engagement.
        rows.sort(key=lambda r: (-r["engagement"], r["source"]))
        merged.append(rows[0])
    return merged, len(records) - len(merged)


def drop_text_duplicates(records: list[dict]) -> tuple[list[dict], int, int]:
    records.sort(key=lambda r: (r["created_at"], -r["engagement"], r["source"], r["post_id"]))
    seen: set[str] = set()
    unique = []
    for r in records:
        k = dedup_key(r["text"]) or r["text"]
        if k in seen:
            continue
        seen.add(k)
        unique.append(r)
    exact = len(records) - len(unique)
    groups = near_duplicate_groups([dedup_key(r["text"]) for r in unique])
    drop = {i for g in groups for i in g[1:]}  # records are in time order: keep the earliest
    return [r for i, r in enumerate(unique) if i not in drop], exact, len(drop)


def fingerprint_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(
    raw_dir: Path | None = None,
    out_dir: Path = BUILD_DIR,
    split_file: Path = SPLIT_FILE,
    resplit: bool = False,
    allow_fetch: bool = False,
    annotations: Path = ANNOTATIONS,
) -> BuildReport:
    import datasets

    raw_dir = raw_dir if raw_dir is not None else src.default_raw_dir()
    records, parsed = collect(raw_dir, out_dir / "cache", allow_fetch)
    records, empty = normalise_records(records)
    records, same_id = merge_same_id(records)
    records, exact, near = drop_text_duplicates(records)

    if resplit or not split_file.exists():
        assignment, meta = assign_splits(records)
        write_split_file(split_file, assignment, meta)
    assignment = read_split_file(split_file)
    missing = [r["post_id"] for r in records if r["post_id"] not in assignment]
    if missing:
        raise SharelensError(
            "E130", f"{len(missing)} posts (e.g. {missing[0]}) are not in {split_file.name}; the sources "
            "changed since the splits were fixed. Rebuild with `make data RESPLIT=1` on purpose",
        )
    labels = load_annotations(annotations)
    unknown = sorted(set(labels) - {r["post_id"] for r in records})
    if unknown:
        raise SharelensError("E122", f"{len(unknown)} annotated posts are not in the corpus, e.g. {unknown[0]}")
    for r in records:
        r["split"] = assignment[r["post_id"]]
        lab = labels.get(r["post_id"], {})
        r["motive"] = lab.get("motive")
        r["motive_secondary"] = lab.get("motive_secondary")
        r["motive_annotator"] = lab.get("motive_annotator")
    records = [r for r in records if r["split"] != "excluded"]
    records.sort(key=lambda r: (r["split"], r["created_at"], r["post_id"]))

    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl_dir = out_dir / "jsonl"
    jsonl_dir.mkdir(exist_ok=True)
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_split[r["split"]].append({k: r[k] for k in FIELDS})
    for old in jsonl_dir.glob("*.jsonl"):
        old.unlink()
    for name, rows in tqdm(sorted(by_split.items()), desc="write splits", unit="split"):
        with (jsonl_dir / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    all_hash = hashlib.sha256()
    for p in sorted(jsonl_dir.glob("*.jsonl")):
        all_hash.update(p.name.encode() + fingerprint_of(p).encode())
    fingerprint = all_hash.hexdigest()

    dd = datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows) for name, rows in sorted(by_split.items())}
    )
    dd.save_to_disk(str(out_dir / "corpus"))

    per_tier = {s: dict(sorted(Counter(r["tier"] for r in rows).items())) for s, rows in by_split.items()}
    per_motive = {
        s: dict(sorted(Counter(r["motive"] for r in rows if r["motive"]).items())) for s, rows in by_split.items()
    }
    report = BuildReport(
        parsed=parsed, empty_text=empty, same_id_merged=same_id, exact_text_dupes=exact, near_text_dupes=near,
        kept=len(records), per_split={s: len(v) for s, v in sorted(by_split.items())},
        per_source=dict(sorted(Counter(r["source"] for r in records).items())),
        per_tier=per_tier, per_motive=per_motive, fingerprint=fingerprint,
    )
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    return report
