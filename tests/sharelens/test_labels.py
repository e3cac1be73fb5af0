import re
from pathlib import Path

import pytest

from sharelens.labels import MOTIVE_ZH, MOTIVES, TIER_BOUNDS, TIERS, check_motive, tier_of

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "share-motives.md"


@pytest.mark.parametrize(("e", "tier"), [(0, "low"), (99, "low"), (100, "medium"), (999, "medium"),
                                         (1000, "high"), (9999, "high"), (10_000, "viral"), (3_000_000, "viral")])
def test_tier_boundaries(e: int, tier: str) -> None:
    assert tier_of(e) == tier


def test_negative_engagement_is_an_error() -> None:
    with pytest.raises(ValueError):
        tier_of(-1)


def test_unknown_motive_is_an_error() -> None:
    assert check_motive("opinion") == "opinion"
    assert check_motive(None) is None
    with pytest.raises(ValueError, match="unknown motive"):
        check_motive("gossip")


def test_constants_match_the_spec_file() -> None:
    if not SPEC.exists():
        pytest.skip("spec not beside the checkout")
    text = SPEC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \| (\S+) \|", text, flags=re.M)
    assert tuple(m for m, _ in rows) == MOTIVES
    assert {m: zh for m, zh in rows} == MOTIVE_ZH
    tiers = re.findall(r"^\| `(low|medium|high|viral)` \|", text, flags=re.M)
    assert tuple(tiers) == TIERS
    assert "E < 100" in text and "100 ≤ E < 1,000" in text and "E ≥ 10,000" in text
    assert TIER_BOUNDS == (100, 1_000, 10_000)
