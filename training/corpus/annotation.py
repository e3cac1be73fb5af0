"""Helpers for the motive annotation rounds: drawing posts to read, and agreement figures.

The draw is seeded and recorded, so a reader can see which posts were picked and why: a random
sample of each split, plus posts a keyword search surfaced as candidates for the rare motives
(the search only chooses what to read; the label comes from reading the post against the spec).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

RARE_CANDIDATE_PATTERNS: dict[str, str] = {
    "incentive": r"抽奖|转发.{0,6}送|揪\d|揪[一二三四五六七八九十]|红包|集赞|关注.{0,4}转发|福利|评论区.{0,3}抽",
    "help_seeking": r"求助|寻人|扩散|帮转|求推荐|救救|急寻|求转|走失|寻找",
    "social_comparison": r"排行|排名|你是第|年度报告|测试|测评|打分|晒出|你呢[?？]|top\s?\d|TOP\s?\d|第一名",
    "public_warning": r"警惕|提醒|辟谣|谣言|诈骗|预警|注意|紧急|召回|骗局|暴雨|地震|台风|别再",
}


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def draw(rows: list[dict], n_random: int, seed: int, rare_cap: int = 0) -> list[dict]:
    """n_random posts at random plus up to rare_cap keyword candidates per rare motive."""
    rng = random.Random(seed)
    picked: dict[str, dict] = {}
    for motive, pattern in RARE_CANDIDATE_PATTERNS.items():
        if rare_cap <= 0:
            break
        hits = [r for r in rows if re.search(pattern, r["text"])]
        rng.shuffle(hits)
        for r in hits[:rare_cap]:
            picked.setdefault(r["post_id"], {**r, "drawn_by": f"search:{motive}"})
    pool = [r for r in rows if r["post_id"] not in picked]
    rng.shuffle(pool)
    for r in pool[:n_random]:
        picked[r["post_id"]] = {**r, "drawn_by": "random"}
    return sorted(picked.values(), key=lambda r: r["post_id"])


def cohen_kappa(a: list[str], b: list[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


def per_label_kappa(a: list[str], b: list[str], labels: tuple[str, ...]) -> dict[str, float | None]:
    """One-vs-rest kappa per label; None where neither reader used the label."""
    from sklearn.metrics import cohen_kappa_score

    out: dict[str, float | None] = {}
    for lab in labels:
        x = [int(v == lab) for v in a]
        y = [int(v == lab) for v in b]
        out[lab] = None if not (any(x) or any(y)) else float(cohen_kappa_score(x, y))
    return out


# -- merging reading rounds into the committed files --------------------------------------------

READINGS_FIELDS = ["post_id", "round", "reader", "motive", "motive_secondary", "note"]
FINAL_FIELDS = ["post_id", "motive", "motive_secondary", "annotator", "method", "spec_version"]


def merge_rounds(work_dir: Path, out_dir: Path, spec_version: str) -> dict:
    """Collect every reading (first readings per batch, the independent second reading, the third
    reading of disagreements) into data/annotations/readings.csv, and the settled label of each
    post into data/annotations/motives.csv. Returns agreement figures."""
    import csv

    from sharelens.labels import MOTIVES

    def read_round(path: Path, round_name: str, reader: str) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        if path.exists():
            for r in csv.DictReader(path.open(encoding="utf-8")):
                rows[r["post_id"]] = {"post_id": r["post_id"], "round": round_name, "reader": reader,
                                      "motive": r["motive"], "motive_secondary": r.get("motive_secondary") or "",
                                      "note": r.get("rule", "")}
        return rows

    first: dict[str, dict] = {}
    for path in sorted(work_dir.glob("labels_*.csv"), key=lambda p: int(p.stem.split("_")[1])):
        first.update(read_round(path, "first", f"agent-reader-b{path.stem.split('_')[1]}"))
    second = read_round(work_dir / "second_labels.csv", "second", "agent-reader-second")
    third = read_round(work_dir / "third_labels.csv", "third", "agent-reader-third")
    readings = [*first.values(), *second.values(), *third.values()]
    for row in readings:
        for m in (row["motive"], row["motive_secondary"] or None):
            if m is not None and m not in MOTIVES:
                raise ValueError(f"{row['reader']}: post {row['post_id']}: unknown motive {m!r}")

    final = settle(first, second, third, spec_version)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_committed(out_dir, readings, final)
    return agreement(readings)


def settle(first: dict[str, dict], second: dict[str, dict], third: dict[str, dict], spec_version: str) -> list[dict]:
    """The settled label of each first-read post: the first reading, unless an independent second
    reading disagrees, in which case the third reading (which saw both candidates) decides."""
    final = []
    for pid, row in sorted(first.items()):
        chosen, annotator, method = row, row["reader"], "read"
        if pid in second and second[pid]["motive"] != row["motive"]:
            if pid not in third:
                raise ValueError(f"post {pid}: readings disagree and no third reading settles it")
            chosen, annotator, method = third[pid], third[pid]["reader"], "adjudicated"
        elif pid in second:
            method = "read-twice-agreed"
        secondary = chosen["motive_secondary"] if chosen["motive_secondary"] != chosen["motive"] else ""
        final.append({"post_id": pid, "motive": chosen["motive"], "motive_secondary": secondary,
                      "annotator": annotator, "method": method, "spec_version": spec_version})
    return final


def write_committed(out_dir: Path, readings: list[dict], final: list[dict]) -> None:
    """data/annotations/readings.csv and motives.csv, sorted by post id (and round)."""
    import csv

    for name, fields, rows in (("readings.csv", READINGS_FIELDS, readings), ("motives.csv", FINAL_FIELDS, final)):
        with (out_dir / name).open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(sorted(rows, key=lambda r: (r["post_id"], r.get("round", ""))))


def agreement(readings: list[dict]) -> dict:
    from sharelens.labels import MOTIVES

    first = {r["post_id"]: r["motive"] for r in readings if r["round"] == "first"}
    second = {r["post_id"]: r["motive"] for r in readings if r["round"] == "second"}
    third = {r["post_id"]: r["motive"] for r in readings if r["round"] == "third"}
    ids = sorted(set(first) & set(second))
    a = [first[i] for i in ids]
    b = [second[i] for i in ids]
    dis = [i for i in ids if first[i] != second[i]]
    return {
        "double_read": len(ids),
        "agreed": len(ids) - len(dis),
        "cohen_kappa": cohen_kappa(a, b) if ids else None,
        "per_motive_kappa": per_label_kappa(a, b, MOTIVES) if ids else {},
        "disagreements": len(dis),
        "settled_by_third": sum(i in third for i in dis),
        "third_sided_with_first": sum(third.get(i) == first[i] for i in dis),
        "third_sided_with_second": sum(third.get(i) == second[i] for i in dis),
    }


def append_round(out_dir: Path, first: dict[str, Path], spec_version: str,
                 second: tuple[str, Path] | None = None, third: tuple[str, Path] | None = None) -> dict:
    """Add a later reading round to the committed files: `first` maps each first reader's name to its
    CSV (post_id,motive,motive_secondary), `second` and `third` are (reader, CSV) of the independent
    second reading and of the third reading that settles its disagreements. Posts already annotated
    are refused (a round adds posts, it never relabels). Returns the agreement figures of all rounds."""
    import csv

    from sharelens.labels import MOTIVES

    def load(path: Path, round_name: str, reader: str) -> dict[str, dict]:
        rows = {}
        for r in csv.DictReader(path.open(encoding="utf-8")):
            for m in (r["motive"], r.get("motive_secondary") or None):
                if m is not None and m not in MOTIVES:
                    raise ValueError(f"{reader}: post {r['post_id']}: unknown motive {m!r}")
            rows[r["post_id"]] = {"post_id": r["post_id"], "round": round_name, "reader": reader,
                                  "motive": r["motive"], "motive_secondary": r.get("motive_secondary") or "", "note": ""}
        return rows

    def read_csv(name: str) -> list[dict]:
        with (out_dir / name).open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))

    readings, final = read_csv("readings.csv"), read_csv("motives.csv")
    known = {r["post_id"] for r in final}
    new_first: dict[str, dict] = {}
    for reader, path in first.items():
        new_first.update(load(path, "first", reader))
    clash = sorted(known & set(new_first))
    if clash:
        raise ValueError(f"{len(clash)} posts of this round are already annotated, e.g. {clash[0]}")
    sec = load(second[1], "second", second[0]) if second else {}
    thr = load(third[1], "third", third[0]) if third else {}
    if set(sec) - set(new_first):
        raise ValueError("the second reading holds posts the first reading of this round does not")
    final += settle(new_first, sec, thr, spec_version)
    readings += [*new_first.values(), *sec.values(), *(r for pid, r in thr.items() if pid in new_first)]
    write_committed(out_dir, readings, final)
    return agreement(readings)
