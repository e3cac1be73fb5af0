"""The context encoder: every field has its own unknown, buckets follow orders of magnitude, the
vocabulary travels with the bundle and a mismatch is refused."""

import json

import pytest

from sharelens.context_features import SLOTS, ContextFeatures, observed_age_days
from sharelens.errors import SharelensError
from sharelens.post import AuthorHistory, Context

FEATURES = ContextFeatures(channels=("明星", "社会"))


def test_unknown_is_zero_in_every_slot_and_known_values_are_not() -> None:
    assert FEATURES.encode(Context()) == [0] * len(SLOTS)
    full = Context(channel="明星", vip=False, verified=True, followers=0, posted_at="2025-01-06T00:10:00+08:00",
                   author_history=AuthorHistory(0, 0.0))
    codes = FEATURES.encode(full, observed_age=0.0)
    assert all(c > 0 for c in codes), codes  # zero followers / zero history are known values, not unknown
    assert all(c < n for c, n in zip(codes, FEATURES.sizes(), strict=True))


def test_buckets_follow_orders_of_magnitude() -> None:
    def followers(n: int) -> int:
        return FEATURES.encode(Context(followers=n))[SLOTS.index("followers")]

    assert followers(5) < followers(50) < followers(5_000) < followers(5_000_000)
    assert followers(100) == followers(999)


def test_unseen_channel_is_unknown_and_reported() -> None:
    ctx = Context(channel="火星", vip=True, posted_at="2025-01-06")
    assert FEATURES.encode(ctx)[0] == 0
    used, unknown, notes = FEATURES.usage(ctx)
    assert used == ["vip", "posted_at"] and "channel" in unknown
    assert any("火星" in n for n in notes) and any("time of day" in n for n in notes)


def test_fit_keeps_channels_seen_often_enough() -> None:
    rows = [{"channel": "明星"}] * 3 + [{"channel": "社会"}] * 2 + [{"channel": None}]
    assert ContextFeatures.fit(rows, min_count=3).channels == ("明星",)


def test_round_trip_and_refusal(tmp_path) -> None:
    FEATURES.save(tmp_path)
    assert ContextFeatures.load(tmp_path) == FEATURES
    assert ContextFeatures.load(tmp_path / "missing") is None  # a text-only bundle
    doc = json.loads((tmp_path / "context.json").read_text())
    doc["sizes"][0] += 1
    (tmp_path / "context.json").write_text(json.dumps(doc))
    with pytest.raises(SharelensError) as info:
        ContextFeatures.load(tmp_path)
    assert info.value.code == "E251"


def test_observed_age() -> None:
    assert observed_age_days("2025-01-06T08:00:00+08:00", "2025-01-08T08:00:00+08:00") == pytest.approx(2.0)
    assert observed_age_days("2025-01-06", "2025-01-06T18:00:00+08:00") == pytest.approx(0.25)  # from noon
    assert observed_age_days(None, "2025-01-06") is None and observed_age_days("2025-01-06", None) is None
    assert observed_age_days("2025-01-08", "2025-01-06") == 0.0  # never negative
