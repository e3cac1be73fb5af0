"""How the tier head sees a post's context: every field becomes one or two small categorical
slots, index 0 meaning *unknown*, each with a learned embedding (`sharelens.modeling`).

Why categories (buckets) rather than raw numbers: follower counts and engagement span seven orders
of magnitude and the relation to the tier is not linear even on a log scale; a bucket per order of
magnitude is what a tier (itself a log-scale bucket of E) needs, costs nothing to run, and gives
"unknown" its own learned value instead of a zero that means "no followers".

`observed_age` is not a context field a caller sends: it is how old a post was when its counts were
snapshotted (right-censoring: a post crawled an hour after posting has not had time to travel).
Training and evaluation set it from the record's `posted_at` and `observed_at`; serving leaves it
unknown, so a prediction is for the typical age of a training snapshot (context dropout trains the
unknown value on every slot).

The channel vocabulary comes from the training corpus and travels in the bundle (`context.json`).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sharelens.errors import SharelensError
from sharelens.post import CHINA, Context, Post, parse_posted_at

FORMAT = "sharelens-context/1"
FILE = "context.json"

# Bucket edges (a value v falls in bucket 1 + bisect_right(edges, v); 0 is unknown).
FOLLOWER_EDGES = (10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
HISTORY_POST_EDGES = (2, 4, 8, 16, 32)
HISTORY_MEDIAN_EDGES = (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000)
AGE_DAY_EDGES = (1, 2, 3, 5, 8, 15, 31, 61)

# slot -> the context field it comes from (None: a measurement, not a caller's field)
SLOT_FIELD: dict[str, str | None] = {
    "channel": "channel",
    "vip": "vip",
    "verified": "verified",
    "followers": "followers",
    "weekday": "posted_at",
    "hour": "posted_at",
    "history_posts": "author_history",
    "history_median": "author_history",
    "observed_age": None,
}
SLOTS: tuple[str, ...] = tuple(SLOT_FIELD)


def _bucket(value: float, edges: tuple[float, ...]) -> int:
    return 1 + bisect.bisect_right(edges, value)


def _bool(value: bool | None) -> int:
    return 0 if value is None else 1 + int(value)


def observed_age_days(posted_at: str | None, observed_at: str | None) -> float | None:
    """Days between publication and the counts' snapshot; None when either is unknown."""
    if not posted_at or not observed_at:
        return None
    try:
        start = datetime.fromisoformat(posted_at)
        end = datetime.fromisoformat(observed_at)
    except ValueError:
        return None
    start = start.replace(tzinfo=CHINA) if start.tzinfo is None else start
    end = end.replace(tzinfo=CHINA) if end.tzinfo is None else end
    if parse_posted_at(posted_at).hour is None:  # a date only: count from its noon
        start = start.replace(hour=12)
    return max(0.0, (end - start).total_seconds() / 86400)


@dataclass(frozen=True)
class ContextFeatures:
    """The fitted encoder: which channels the model knows. Everything else is fixed by this file."""

    channels: tuple[str, ...]

    @classmethod
    def fit(cls, records: Iterable[Mapping[str, Any]], min_count: int = 3) -> ContextFeatures:
        """Channels seen at least `min_count` times in the training records (rarer ones stay unknown)."""
        counts = Counter(r.get("channel") for r in records if r.get("channel"))
        return cls(channels=tuple(sorted(c for c, n in counts.items() if n >= min_count)))

    def sizes(self) -> list[int]:
        """Number of categories per slot, unknown included."""
        return [
            1 + len(self.channels),
            3, 3,
            2 + len(FOLLOWER_EDGES),
            8, 25,
            2 + len(HISTORY_POST_EDGES),
            2 + len(HISTORY_MEDIAN_EDGES),
            2 + len(AGE_DAY_EDGES),
        ]

    def knows_channel(self, channel: str | None) -> bool:
        return channel is not None and channel in self._channel_index

    @property
    def _channel_index(self) -> dict[str, int]:
        index = self.__dict__.get("_index")
        if index is None:
            index = {c: i + 1 for i, c in enumerate(self.channels)}
            object.__setattr__(self, "_index", index)
        return index

    def encode(self, context: Context, observed_age: float | None = None) -> list[int]:
        posted = context.posted
        hist = context.author_history
        return [
            self._channel_index.get(context.channel, 0) if context.channel else 0,
            _bool(context.vip),
            _bool(context.verified),
            0 if context.followers is None else _bucket(context.followers, FOLLOWER_EDGES),
            0 if posted is None else 1 + posted.weekday,
            0 if posted is None or posted.hour is None else 1 + posted.hour,
            0 if hist is None else _bucket(hist.posts, HISTORY_POST_EDGES),
            0 if hist is None else _bucket(math.floor(hist.median_engagement), HISTORY_MEDIAN_EDGES),
            0 if observed_age is None else _bucket(observed_age, AGE_DAY_EDGES),
        ]

    def encode_posts(self, posts: Iterable[Post]) -> list[list[int]]:
        return [self.encode(p.context) for p in posts]

    def usage(self, context: Context) -> tuple[list[str], list[str], list[str]]:
        """(used, unknown, notes): the caller's fields the model read, the ones it did not, and why
        a given field was not used (an unseen channel is reported, not silently dropped)."""
        used, unknown, notes = [], [], []
        for name in Context.field_names():
            value = getattr(context, name)
            if value is None:
                unknown.append(name)
            elif name == "channel" and not self.knows_channel(value):
                unknown.append(name)
                notes.append(f"channel {value!r} was not seen in training; it is treated as unknown")
            elif name == "posted_at" and context.posted is not None and context.posted.hour is None:
                used.append(name)
                notes.append("posted_at has no time of day: only the weekday is used")
            else:
                used.append(name)
        return used, unknown, notes

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "slots": list(SLOTS), "sizes": self.sizes(), "channels": list(self.channels),
                "edges": {"followers": FOLLOWER_EDGES, "history_posts": HISTORY_POST_EDGES,
                          "history_median": HISTORY_MEDIAN_EDGES, "observed_age": AGE_DAY_EDGES}}

    def save(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n",
                                         encoding="utf-8")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ContextFeatures:
        if doc.get("format") != FORMAT:
            raise SharelensError("E251", f"context features format {doc.get('format')!r}; this sharelens reads "
                                 f"{FORMAT}: retrain the bundle")
        features = cls(channels=tuple(doc.get("channels", ())))
        if list(doc.get("slots", [])) != list(SLOTS) or list(doc.get("sizes", [])) != features.sizes():
            raise SharelensError("E251", "the bundle's context features do not match this sharelens "
                                 f"(slots {doc.get('slots')}); retrain the bundle")
        return features

    @classmethod
    def load(cls, folder: Path) -> ContextFeatures | None:
        """The bundle's encoder, or None for a text-only bundle (made before context existed)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SharelensError("E251", f"{path} is unreadable ({exc}); retrain the bundle") from exc
        return cls.from_dict(doc)
