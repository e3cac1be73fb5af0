"""One parser per raw format. Each yields plain dicts in the spec's record format (before
normalisation and deduplication), with a few provenance fields the splits need."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sharelens.errors import SharelensError

CST = timezone(timedelta(hours=8))
Record = dict


def _int(value: str | int | float | None, where: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(float(str(value).replace(",", "").strip()))
    except ValueError as exc:
        raise SharelensError("E110", f"{where}: count {value!r} is not a number") from exc


def weibo_feed(paths: list[Path], source_id: str) -> Iterator[Record]:
    """The student 'weibo public opinion' scraper's articleData.csv (five repositories share it)."""
    for path in paths:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                pid = (row.get("id") or "").strip()
                if not pid:
                    continue
                where = f"{source_id}:{pid}"
                author = (row.get("authorDetail") or "").rstrip("/").rsplit("/", 1)[-1] or row.get("authorName")
                yield {
                    "source": source_id,
                    "post_id": pid,
                    "raw_text": row.get("content") or "",
                    "created_at": (row.get("created_at") or "")[:10],
                    "reposts": _int(row.get("reposts_count"), where),
                    "comments": _int(row.get("commentsLen"), where),
                    "likes": _int(row.get("likeNum"), where),
                    "author": f"weibo:{author}",
                    "channel": row.get("type") or "",
                }


_CCTV_DATE = re.compile(r"(\d{1,2})月(\d{1,2})日")
_CCTV_ID = re.compile(r"weibo\.com/\d+/([A-Za-z0-9]+)")


def cctv(paths: list[Path], source_id: str) -> Iterator[Record]:
    """CCTV News account crawl of 2020 (MineSelf2016/SummerResearch); WB_from has no year."""
    for path in paths:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                url = row.get("weibo_url") or ""
                m = _CCTV_ID.search(url)
                if not m:
                    continue
                where = f"{source_id}:{m.group(1)}"
                d = _CCTV_DATE.search(row.get("WB_from") or row.get("Time") or "")
                created = f"2020-{int(d.group(1)):02d}-{int(d.group(2)):02d}" if d else ""
                yield {
                    "source": source_id,
                    "post_id": m.group(1),
                    "raw_text": row.get("WB_text") or "",
                    "created_at": created,
                    "reposts": _int(row.get("forward"), where),
                    "comments": _int(row.get("comment"), where),
                    "likes": _int(row.get("like"), where),
                    "author": "weibo:2656274875",
                    "channel": "",
                }


def _ced_time(value: int | str) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(int(value), CST).strftime("%Y-%m-%d")
    try:
        return datetime.strptime(str(value), "%a %b %d %H:%M:%S %z %Y").astimezone(CST).strftime("%Y-%m-%d")
    except ValueError:
        return ""


def ced(paths: list[Path], source_id: str) -> Iterator[Record]:
    """CED rumour-detection originals: one JSON object per microblog; file stem is the id."""
    for path in paths:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SharelensError("E111", f"{source_id}: {path.name} is not valid JSON ({exc})") from exc
        where = f"{source_id}:{path.stem}"
        yield {
            "source": source_id,
            "post_id": path.stem,
            "raw_text": obj.get("text") or "",
            "created_at": _ced_time(obj.get("time", "")),
            "reposts": _int(obj.get("reposts"), where),
            "comments": _int(obj.get("comments"), where),
            "likes": _int(obj.get("likes"), where),
            "author": f"weibo:{path.stem.rsplit('_', 1)[-1]}",
            "channel": "",
        }


PARSERS: dict[str, Callable[[list[Path], str], Iterator[Record]]] = {
    "weibo_feed": weibo_feed,
    "cctv": cctv,
    "ced": ced,
}
