"""One parser per raw format. Each yields plain dicts in the spec's record format (before
normalisation and deduplication), with a few provenance fields the splits need and the spec's
context fields (channel, vip, verified, followers, posted_at) plus `observed_at`, when the counts
were snapshotted. A context field a source does not record is None (unknown), never 0 or "".
`author_history` is computed later, by the build, from the deduplicated and split corpus.

A record whose date cannot be known gets created_at "": the build drops and counts it.
"""

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

CONTEXT_FIELDS = ("channel", "vip", "verified", "followers", "posted_at", "observed_at")


def _int(value: str | int | float | None, where: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(float(str(value).replace(",", "").strip()))
    except ValueError as exc:
        raise SharelensError("E110", f"{where}: count {value!r} is not a number") from exc


def _count_or_none(value: str | int | float | None) -> int | None:
    """A non-negative whole number, or None when the source has none (never 0 for unknown)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        n = int(float(str(value).replace(",", "").strip()))
    except ValueError:
        return None
    return n if n >= 0 else None


def iso_cst(dt: datetime) -> str:
    """ISO 8601 in China time with the +08:00 offset, to the second."""
    dt = dt.replace(tzinfo=CST) if dt.tzinfo is None else dt.astimezone(CST)
    return dt.replace(microsecond=0).isoformat()


def _unix_cst(seconds: int) -> str:
    return iso_cst(datetime.fromtimestamp(int(seconds), CST))


_EXPIRES = re.compile(r"[?&]Expires=(\d{9,11})")


def avatar_expiry(url: str | None) -> str | None:
    """The `Expires=<unix>` of a signed sinaimg avatar URL, in China time: the feed rows' observed_at.

    The feed scraper stores the author's `avatar_large`, a URL signed when the API answered; its
    expiry lies a few hours after that answer (data/README.md, "observed_at")."""
    m = _EXPIRES.search(url or "")
    return _unix_cst(int(m.group(1))) if m else None


def _empty_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def weibo_feed(paths: list[Path], source_id: str) -> Iterator[Record]:
    """The student 'weibo public opinion' scraper's articleData.csv (five repositories share it).

    `isVip` is the scraper's copy of the API's `user.v_plus` (Weibo V+, the paid fan subscription a
    blogger offers), not verification and not the author's own membership: see data/README.md."""
    vip_of = {"1": True, "0": False}
    for path in paths:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                pid = (row.get("id") or "").strip()
                if not pid:
                    continue
                where = f"{source_id}:{pid}"
                author = (row.get("authorDetail") or "").rstrip("/").rsplit("/", 1)[-1] or row.get("authorName")
                created = (row.get("created_at") or "")[:10]
                yield {
                    "source": source_id,
                    "post_id": pid,
                    "raw_text": row.get("content") or "",
                    "created_at": created,
                    "reposts": _int(row.get("reposts_count"), where),
                    "comments": _int(row.get("commentsLen"), where),
                    "likes": _int(row.get("likeNum"), where),
                    "author": f"weibo:{author}",
                    "channel": _empty_to_none(row.get("type")),
                    "vip": vip_of.get((row.get("isVip") or "").strip()),
                    "verified": None,
                    "followers": None,
                    "posted_at": created or None,  # the scraper keeps only the date
                    "observed_at": avatar_expiry(row.get("authorAvatar")),
                }


_CCTV_DATE = re.compile(r"(\d{1,2})月(\d{1,2})日(?:\s*(\d{1,2}):(\d{2}))?")
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
                posted = None
                if d and d.group(3):
                    posted = f"{created}T{int(d.group(3)):02d}:{d.group(4)}:00+08:00"
                elif created:
                    posted = created
                yield {
                    "source": source_id,
                    "post_id": m.group(1),
                    "raw_text": row.get("WB_text") or "",
                    "created_at": created,
                    "reposts": _int(row.get("forward"), where),
                    "comments": _int(row.get("comment"), where),
                    "likes": _int(row.get("like"), where),
                    "author": "weibo:2656274875",
                    "channel": None,
                    "vip": None,
                    "verified": None,  # not recorded by the crawl
                    "followers": None,
                    "posted_at": posted,
                    "observed_at": None,  # the crawl date is not recorded
                }


def _ced_time(value: int | str) -> str | None:
    """Full China-time ISO datetime of a CED `time` (unix seconds, or Weibo's API string)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _unix_cst(int(value))
    try:
        return iso_cst(datetime.strptime(str(value), "%a %b %d %H:%M:%S %z %Y"))
    except ValueError:
        return None


def ced(paths: list[Path], source_id: str) -> Iterator[Record]:
    """CED rumour-detection originals: one JSON object per microblog; file stem is the id."""
    for path in paths:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SharelensError("E111", f"{source_id}: {path.name} is not valid JSON ({exc})") from exc
        where = f"{source_id}:{path.stem}"
        user = obj.get("user")
        user = user if isinstance(user, dict) else {}  # 87 files have user: "empty"
        verified = user.get("verified")
        posted = _ced_time(obj.get("time", ""))
        yield {
            "source": source_id,
            "post_id": path.stem,
            "raw_text": obj.get("text") or "",
            "created_at": posted[:10] if posted else "",
            "reposts": _int(obj.get("reposts"), where),
            "comments": _int(obj.get("comments"), where),
            "likes": _int(obj.get("likes"), where),
            "author": f"weibo:{path.stem.rsplit('_', 1)[-1]}",
            "channel": None,
            "vip": None,
            "verified": verified if isinstance(verified, bool) else None,
            "followers": _count_or_none(user.get("followers")),
            "posted_at": posted,
            "observed_at": None,  # the dataset does not say when it was crawled
        }


# --- llj0824/weibo-research-guanghua: 226 ordinary accounts, every original post of 2025-01..06-14 ----

# When each posting-history file's counts were snapshotted (a plain date: the time of day is not
# known). bf0531: "posts before 2025-05-31", the users' totals are "as of 2025-05-31" (ReadMe.txt);
# af0531: "newly crawled" after the 2025-06-15 window end, packaged with user_list_20250623.xlsx.
ORDINARY_OBSERVED = {"posting_history_bf0531.xlsx": "2025-05-31", "posting_history_af0531.xlsx": "2025-06-15"}
ORDINARY_USERS = "user_list_20250623.xlsx"
ORDINARY_ID_PREFIX = "ord_"


def _xlsx_rows(path: Path) -> Iterator[dict]:
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise SharelensError("E112", "reading the .xlsx sources needs openpyxl: run `make setup`") from exc
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows)]
        for values in rows:
            if values is None or all(v is None for v in values):
                continue
            yield dict(zip(header, values, strict=False))
    finally:
        wb.close()


def _ordinary_user(row: dict) -> dict:
    """Only what the tier may use: followers, verified; never names, bios, gender or location.

    `user_verified` is empty for 208 users and "club" for 18, and `user_verified_tag` (the
    verification reason every verified account has) is empty for all 226: no account carries a
    Weibo verification, so both map to False ("club" is a badge, not a verification).
    `user_vip_type` (普通用户 / VIP_n / SVIP_n / VVIP_n) is the author's paid membership (会员), a
    different flag from the feed's isVip (V+, see weibo_feed): `vip` stays unknown here."""
    verified = row.get("user_verified")
    return {
        "followers": _count_or_none(row.get("user_followers_cnt")),
        "verified": verified is True or str(verified).strip().lower() == "true",
        "vip": None,
    }


def ordinary(paths: list[Path], source_id: str) -> Iterator[Record]:
    """Posting histories joined to the user list on user_id."""
    by_name = {p.name: p for p in paths}
    if ORDINARY_USERS not in by_name:
        raise SharelensError("E113", f"{source_id}: {ORDINARY_USERS} is missing")
    users = {str(r["user_id"]).strip(): _ordinary_user(r) for r in _xlsx_rows(by_name[ORDINARY_USERS])}
    for name, observed in ORDINARY_OBSERVED.items():
        if name not in by_name:
            raise SharelensError("E113", f"{source_id}: {name} is missing")
        for row in _xlsx_rows(by_name[name]):
            pid = str(row.get("post_id") or "").strip()
            uid = str(row.get("user_id") or "").strip()
            if not pid:
                continue
            where = f"{source_id}:{pid}"
            if uid not in users:
                raise SharelensError("E114", f"{where}: user {uid} is not in {ORDINARY_USERS}")
            published = row.get("post_publish_time")
            if isinstance(published, str):
                published = datetime.fromisoformat(published.strip())
            posted = iso_cst(published) if isinstance(published, datetime) else None
            yield {
                "source": source_id,
                "post_id": f"{ORDINARY_ID_PREFIX}{pid}",
                "raw_text": row.get("post_content") or "",
                "created_at": posted[:10] if posted else "",
                "reposts": _int(row.get("post_reposts_cnt"), where),
                "comments": _int(row.get("post_comments_cnt"), where),
                "likes": _int(row.get("post_likes_cnt"), where),
                "author": f"weibo:{uid}",
                "channel": None,
                **users[uid],
                "posted_at": posted,
                "observed_at": observed,
            }


# --- PsYear/weibo_spam: timelines of 1,716 accounts crawled from weibo.cn in 2017-05 -------------------

# weibo.cn writes a date with its year ("2015-08-10 16:22:29") except in the current year
# ("05月14日 12:30"), and "今天 13:32" / "9分钟前" for the crawl day. The crawl ran in May 2017 (the
# files were committed 2017-05-17..19; dated posts end 2016-12-31, year-less ones run 01-01..05-18),
# so a year-less date is 2017. The crawl day itself is not recorded: today/minutes-ago posts are dropped.
SPAM_YEARLESS_YEAR = 2017
_SPAM_FULL = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s+(\d{2}):(\d{2})(?::(\d{2}))?")
_SPAM_YEARLESS = re.compile(r"^\s*(\d{1,2})月(\d{1,2})日\s*(\d{1,2}):(\d{2})")


def spam_time(value: str) -> str | None:
    """posted_at of a weibo.cn time string, or None for the crawl-relative ones."""
    m = _SPAM_FULL.match(value or "")
    if m:
        y, mo, d, h, mi, s = m.groups()
        return iso_cst(datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0)))
    m = _SPAM_YEARLESS.match(value or "")
    if m:
        mo, d, h, mi = (int(x) for x in m.groups())
        return iso_cst(datetime(SPAM_YEARLESS_YEAR, mo, d, h, mi))
    return None


def weibo_spam(paths: list[Path], source_id: str) -> Iterator[Record]:
    """One JSON per account; post_id spam_<id>_<index in its weibo list> (the annotators' scheme).

    Counts are the account's own post's, and for a repost (`forward_flag` 1) not the original's:
    kept as recorded, never used as a tier (the domain is motive-only)."""
    for path in paths:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SharelensError("E111", f"{source_id}: {path.name} is not valid JSON ({exc})") from exc
        uid = str(obj.get("id") or path.stem).strip()
        followers = _count_or_none(obj.get("followers_num"))
        for i, post in enumerate(obj.get("weibo") or []):
            where = f"{source_id}:spam_{uid}_{i}"
            posted = spam_time(post.get("time") or "")
            yield {
                "source": source_id,
                "post_id": f"spam_{uid}_{i}",
                "raw_text": post.get("content") or "",
                "created_at": posted[:10] if posted else "",
                "reposts": _int(post.get("forward"), where),
                "comments": _int(post.get("comment"), where),
                "likes": _int(post.get("upvote"), where),
                "author": f"weibo:{uid}",
                "channel": None,
                "vip": None,
                "verified": None,
                "followers": followers,
                "posted_at": posted,
                "observed_at": None,  # May 2017, day not recorded
            }


PARSERS: dict[str, Callable[[list[Path], str], Iterator[Record]]] = {
    "weibo_feed": weibo_feed,
    "cctv": cctv,
    "ced": ced,
    "ordinary": ordinary,
    "weibo_spam": weibo_spam,
}
