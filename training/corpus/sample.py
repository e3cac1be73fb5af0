"""Draw the committed sample (data/sample) from the raw mirror: `python -m training.corpus.sample`.

Why: `make test` must train, evaluate, score and serve on real posts without the raw mirror, and the
mirror's texts may not be committed, except those of the one openly licensed source: the CCTV News
crawl of MineSelf2016/SummerResearch (MIT). The sample is 400 of its posts that our readers annotated
(in `aux_cctv`, never the out-of-domain test): up to 40 of each motive first, so every motive is present,
then the rest at random; plus 50 unannotated ones, drawn with a fixed seed; each is the raw row the corpus keeps for that post (the
most mature snapshot), with the columns the parser reads (the avatar and image URL columns dropped).

Writes data/sample/raw/<mirror layout>/sina_cctv_sample.csv, sources.json (its pin), motives.csv (the
annotations of those posts, copied from data/annotations/motives.csv) and splits.tsv (by time).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

from sharelens.paths import ANNOTATIONS, JSONL_DIR, SAMPLE_DIR, default_raw_dir
from training.corpus import sources as src

ORIGIN = "MineSelf2016/SummerResearch"
SAMPLE_CSV = "dataset/sina_cctv_raw_data/sina_cctv_sample.csv"
COLUMNS = ("WB_from", "WB_text", "forward", "comment", "like", "Time", "weibo_url")
PER_MOTIVE = 40
LABELLED = 400
UNLABELLED = 50


def _pick(aux_cctv: list[dict], seed: int) -> list[str]:
    rng = random.Random(seed)
    by_motive: dict[str, list[str]] = defaultdict(list)
    unlabelled: list[str] = []
    for r in aux_cctv:
        (by_motive[r["motive"]] if r.get("motive") else unlabelled).append(r["post_id"])
    chosen: list[str] = []
    for motive in sorted(by_motive):
        ids = sorted(by_motive[motive])
        chosen += rng.sample(ids, min(PER_MOTIVE, len(ids)))
    rest = sorted({pid for ids in by_motive.values() for pid in ids} - set(chosen))
    chosen += rng.sample(rest, LABELLED - len(chosen))
    chosen += rng.sample(sorted(unlabelled), UNLABELLED)
    return chosen


def draw(raw_dir: Path, jsonl_dir: Path = JSONL_DIR, out: Path = SAMPLE_DIR, seed: int = 0) -> int:
    aux = [json.loads(line) for line in (jsonl_dir / "aux_cctv.jsonl").open(encoding="utf-8")]
    kept = {r["post_id"]: r for r in aux}
    chosen = set(_pick(aux, seed))
    source = next(s for s in src.load_manifest() if s.repo == ORIGIN)
    rows: dict[str, dict] = {}
    for path in src.resolve(source, raw_dir, Path("/nonexistent")):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                m = src_id(row.get("weibo_url") or "")
                if m not in chosen:
                    continue
                want = kept[m]
                counts = (int(row["forward"] or 0), int(row["comment"] or 0), int(row["like"] or 0))
                if counts == (want["reposts"], want["comments"], want["likes"]) and m not in rows:
                    rows[m] = {c: row.get(c, "") for c in COLUMNS}
    missing = chosen - set(rows)
    if missing:
        raise SystemExit(f"{len(missing)} chosen posts have no raw row with the corpus's counts, e.g. {min(missing)}")
    dest = out / "raw" / source.mirror_folder / SAMPLE_CSV
    dest.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows.values(), key=lambda r: (kept[src_id(r["weibo_url"])]["created_at"], r["weibo_url"]))
    with dest.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(ordered)
    with ANNOTATIONS.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        labels = [r for r in reader if r["post_id"] in chosen]
        fields = reader.fieldnames
    with (out / "motives.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(sorted(labels, key=lambda r: r["post_id"]))
    manifest = {
        "format": "sharelens-sources/1",
        "note": "The committed sample: a selection of one pinned source's rows (training/corpus/sample.py), "
                "in the mirror's layout under data/sample/raw. Tests build it with training.corpus.build.build_sample.",
        "sources": [{
            "id": f"{ORIGIN} (sample)", "repo": ORIGIN, "commit": source.commit, "glob": SAMPLE_CSV,
            "sha256": src.tree_hash([dest]), "files": 1, "bytes": dest.stat().st_size,
            "licence": "MIT (Copyright (c) 2020 Qi Cong); see data/sample/LICENSE", "parser": source.parser,
            "domain": "sample",
        }],
    }
    (out / "sources.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(rows)


def src_id(url: str) -> str | None:
    from training.corpus.parsers import _CCTV_ID

    m = _CCTV_ID.search(url)
    return m.group(1) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw-dir", type=Path, default=default_raw_dir())
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = draw(a.raw_dir, seed=a.seed)
    (SAMPLE_DIR / "splits.tsv").unlink(missing_ok=True)  # recomputed by the first build
    from training.corpus.build import build_sample

    report = build_sample(out_dir=Path("/tmp/sharelens-sample-build")).to_dict()
    print(f"{n} posts written to {SAMPLE_DIR}; built: {report['per_split']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
