"""A post: its text plus the optional context the engagement tier depends on.

This is the one type every layer passes around (corpus records, training data, the model's
inputs, `Predictor`, the batcher, the explainer, evaluation, the API, the CLI and the page). The
fields are defined by the spec (`share-motives.md`, "Context"): each is optional, and a missing
field is *unknown* (the model has a learned "unknown" for every field), never a zero.

A new context field touches this file (the field and its check) and `sharelens.context_features`
(how the model sees it), and their tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sharelens.errors import SharelensError

CHINA = timezone(timedelta(hours=8))


class ContextError(SharelensError):
    """A context value that cannot be used; `field` names it (for a precise API error)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__("E230", f"context.{field_name}: {message}")
        self.field = field_name
        self.reason = message


@dataclass(frozen=True)
class AuthorHistory:
    """The same author's earlier posts: how many, and their median engagement E."""

    posts: int
    median_engagement: float

    def to_dict(self) -> dict[str, Any]:
        return {"posts": self.posts, "median_engagement": self.median_engagement}


@dataclass(frozen=True)
class PostedAt:
    """When a post is published, in China time. `hour` is None when only a date is known."""

    iso: str
    weekday: int  # Monday 0 .. Sunday 6, China time
    hour: int | None


def parse_posted_at(value: str) -> PostedAt:
    """ISO 8601 date or date-time; no zone means China time (the spec). Raises ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("empty")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    date_only = "T" not in text.upper() and " " not in text and ":" not in text
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CHINA)
    local = dt.astimezone(CHINA) if not date_only else dt
    return PostedAt(iso=text, weekday=local.weekday(), hour=None if date_only else local.hour)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ContextError(name, f"must be true or false, got {type(value).__name__}")
    return value


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ContextError(name, f"must be a whole number >= 0, got {value!r}")
    if value < 0:
        raise ContextError(name, f"must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class Context:
    """What the caller knows about a post beyond its text. None = unknown."""

    channel: str | None = None
    vip: bool | None = None
    verified: bool | None = None
    followers: int | None = None
    posted_at: str | None = None
    author_history: AuthorHistory | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Context:
        """Check and build from JSON-like data (API body, corpus record). Unknown keys are refused,
        with the list of known ones; None values mean unknown."""
        if data is None:
            return EMPTY_CONTEXT
        if not isinstance(data, Mapping):
            raise ContextError("", "must be an object")
        known = cls.field_names()
        extra = sorted(k for k in data if k not in known)
        if extra:
            raise SharelensError("E231", f"unknown context field(s) {', '.join(map(repr, extra))}; "
                                 f"known fields: {', '.join(known)}")
        out: dict[str, Any] = {}
        channel = data.get("channel")
        if channel is not None:
            if not isinstance(channel, str):
                raise ContextError("channel", f"must be a string, got {type(channel).__name__}")
            channel = channel.strip()
            out["channel"] = channel or None
        for name in ("vip", "verified"):
            if data.get(name) is not None:
                out[name] = _check_bool(name, data[name])
        if data.get("followers") is not None:
            out["followers"] = _check_count("followers", data["followers"])
        posted = data.get("posted_at")
        if posted is not None:
            if not isinstance(posted, str):
                raise ContextError("posted_at", f"must be an ISO 8601 string, got {type(posted).__name__}")
            try:
                parse_posted_at(posted)
            except (ValueError, OverflowError):
                raise ContextError("posted_at", f"{posted[:40]!r} is not an ISO 8601 date or date-time "
                                   "(e.g. 2025-01-06 or 2025-01-06T20:30:00+08:00)") from None
            out["posted_at"] = posted.strip()
        hist = data.get("author_history")
        if hist is not None:
            if not isinstance(hist, Mapping):
                raise ContextError("author_history", "must be an object {\"posts\": n, \"median_engagement\": x}")
            extra = sorted(k for k in hist if k not in ("posts", "median_engagement"))
            if extra or "posts" not in hist or "median_engagement" not in hist:
                raise ContextError("author_history", "needs exactly the keys posts and median_engagement")
            posts = _check_count("author_history.posts", hist["posts"])
            med = hist["median_engagement"]
            if isinstance(med, bool) or not isinstance(med, (int, float)) or not math.isfinite(med) or med < 0:
                raise ContextError("author_history.median_engagement", f"must be a number >= 0, got {med!r}")
            out["author_history"] = AuthorHistory(posts=posts, median_engagement=float(med))
        return cls(**out)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Context:
        """The context fields of a corpus record (the spec's record format carries them at top level)."""
        return cls.from_mapping({k: record.get(k) for k in cls.field_names() if record.get(k) is not None})

    def to_dict(self) -> dict[str, Any]:
        """Known fields only, JSON-ready."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_dict() if isinstance(value, AuthorHistory) else value
        return out

    def known(self) -> tuple[str, ...]:
        return tuple(n for n in self.field_names() if getattr(self, n) is not None)

    def without(self, *names: str) -> Context:
        return replace(self, **{n: None for n in names})

    @property
    def posted(self) -> PostedAt | None:
        return parse_posted_at(self.posted_at) if self.posted_at else None


EMPTY_CONTEXT = Context()


@dataclass(frozen=True)
class Post:
    """A post as every layer sees it: the raw text and what is known around it."""

    text: str
    context: Context = field(default=EMPTY_CONTEXT)

    @classmethod
    def of(cls, item: Post | str) -> Post:
        """A bare string is a post with unknown context."""
        return item if isinstance(item, Post) else cls(text=item)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Post:
        return cls(text=record["text"], context=Context.from_record(record))
