"""The one post type: context checks give precise errors, unknown stays unknown."""

import pytest

from sharelens.errors import SharelensError
from sharelens.post import AuthorHistory, Context, ContextError, Post, parse_posted_at


def test_a_bare_string_is_a_post_with_unknown_context() -> None:
    post = Post.of("转发抽奖")
    assert post.text == "转发抽奖" and post.context.known() == ()
    assert Post.of(post) is post


def test_context_from_mapping_keeps_what_is_given_and_nothing_else() -> None:
    ctx = Context.from_mapping({"channel": " 明星 ", "vip": True, "followers": 175,
                                "posted_at": "2025-01-06T20:30:00+08:00",
                                "author_history": {"posts": 3, "median_engagement": 850}})
    assert ctx.channel == "明星" and ctx.vip is True and ctx.verified is None and ctx.followers == 175
    assert ctx.author_history == AuthorHistory(3, 850.0)
    assert ctx.known() == ("channel", "vip", "followers", "posted_at", "author_history")
    assert ctx.to_dict()["author_history"] == {"posts": 3, "median_engagement": 850.0}
    assert ctx.without("vip", "channel").known() == ("followers", "posted_at", "author_history")
    assert Context.from_mapping({"channel": "  "}).channel is None  # blank is unknown, not a channel ""


@pytest.mark.parametrize(("data", "field"), [
    ({"vip": "yes"}, "vip"),
    ({"verified": 1}, "verified"),
    ({"followers": -1}, "followers"),
    ({"followers": 1.5}, "followers"),
    ({"followers": True}, "followers"),
    ({"posted_at": "yesterday"}, "posted_at"),
    ({"posted_at": 20250106}, "posted_at"),
    ({"channel": 3}, "channel"),
    ({"author_history": {"posts": 2}}, "author_history"),
    ({"author_history": {"posts": -2, "median_engagement": 1}}, "author_history.posts"),
    ({"author_history": {"posts": 2, "median_engagement": float("nan")}}, "author_history.median_engagement"),
])
def test_bad_context_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(ContextError) as info:
        Context.from_mapping(data)
    assert info.value.field == field and info.value.code == "E230"


def test_unknown_context_keys_are_refused_with_the_known_ones() -> None:
    with pytest.raises(SharelensError) as info:
        Context.from_mapping({"chanel": "明星"})
    assert info.value.code == "E231" and "'chanel'" in info.value.message
    assert "channel, vip, verified, followers, posted_at, author_history" in info.value.message


def test_posted_at_in_china_time() -> None:
    assert parse_posted_at("2025-01-06").hour is None and parse_posted_at("2025-01-06").weekday == 0
    # 12:30 UTC is 20:30 in China; a time without a zone is China time already
    assert parse_posted_at("2025-01-06T12:30:00Z").hour == 20
    assert parse_posted_at("2025-01-06T20:30").hour == 20
    assert parse_posted_at("2025-01-05T23:30:00-01:00").weekday == 0  # Monday 08:30 in China


def test_a_corpus_record_carries_its_context_at_top_level() -> None:
    post = Post.from_record({"text": "t", "channel": "社会", "vip": False, "followers": None,
                             "author_history": None, "motive": "opinion"})
    assert post.context == Context(channel="社会", vip=False)
