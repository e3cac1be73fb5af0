"""The label contract of `spec/share-motives.md`, in one place.

Every other module reads motive ids, tier ids and tier thresholds from here; a test checks
these constants against the spec file so that the two cannot drift apart silently.
"""

from __future__ import annotations

# Bumped whenever the spec file's label set or tier thresholds change.
SPEC_VERSION = "share-motives/1"

MOTIVES: tuple[str, ...] = (
    "incentive",
    "practical_value",
    "social_currency",
    "opinion",
    "self_image",
    "social_comparison",
    "belonging",
    "emotional_expression",
    "help_seeking",
    "public_warning",
)

MOTIVE_ZH: dict[str, str] = {
    "incentive": "利益驱动",
    "practical_value": "实用价值",
    "social_currency": "社交谈资",
    "opinion": "观点表达",
    "self_image": "形象塑造",
    "social_comparison": "社交比较",
    "belonging": "圈层认同",
    "emotional_expression": "情绪表达",
    "help_seeking": "寻求帮助",
    "public_warning": "预警辟谣",
}

TIERS: tuple[str, ...] = ("low", "medium", "high", "viral")
# Lower bounds of E = reposts + comments + likes for medium, high and viral.
TIER_BOUNDS: tuple[int, ...] = (100, 1_000, 10_000)

# Weibo shows a million or more as "100万+": a source value of exactly this is a floor.
COUNT_FLOOR = 1_000_000

MOTIVE2ID = {m: i for i, m in enumerate(MOTIVES)}
TIER2ID = {t: i for i, t in enumerate(TIERS)}


def engagement(reposts: int, comments: int, likes: int) -> int:
    return int(reposts) + int(comments) + int(likes)


def tier_of(e: int) -> str:
    """The engagement tier of a total E, by the spec's thresholds."""
    if e < 0:
        raise ValueError(f"engagement must be >= 0, got {e}")
    idx = sum(e >= b for b in TIER_BOUNDS)
    return TIERS[idx]


def check_motive(m: str | None) -> str | None:
    if m is None or m == "":
        return None
    if m not in MOTIVE2ID:
        raise ValueError(f"unknown motive {m!r}; expected one of {', '.join(MOTIVES)}")
    return m
