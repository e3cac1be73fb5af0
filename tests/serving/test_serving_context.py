"""Context through the API: `text` + `context` and `posts`, which fields were used, the tier's
context contributions, precise 422s, and a text-only model that says it ignored the context."""

from __future__ import annotations

import pytest

from sharelens.post import Context

FULL = {"channel": "明星", "vip": True, "verified": False, "followers": 175,
        "posted_at": "2025-01-06T20:30:00+08:00", "author_history": {"posts": 25, "median_engagement": 850}}
TEXT = "暴雨预警：今晚有大暴雨，请注意出行安全"


def _tier(r: dict) -> list[float]:
    return [t["probability"] for t in r["tier"]["probabilities"]]


def test_context_is_used_and_changes_only_the_tier(client) -> None:
    plain = client.post("/predict", json={"text": TEXT}).json()["results"][0]
    res = client.post("/predict", json={"text": TEXT, "context": FULL})
    assert res.status_code == 200, res.text
    r = res.json()["results"][0]
    assert r["context"] == {"used": list(Context.field_names()), "unknown": [], "notes": []}
    assert plain["context"]["used"] == [] and plain["context"]["unknown"] == list(Context.field_names())
    assert r["motive"] == plain["motive"]  # the motive is a property of the text alone
    assert _tier(r) != pytest.approx(_tier(plain), abs=1e-6)


def test_posts_batch_matches_single_calls(client) -> None:
    posts = [{"text": TEXT, "context": FULL}, {"text": "求扩散！寻找走失老人"}, {"text": TEXT, "context": {"vip": False}}]
    batch = client.post("/predict", json={"posts": posts}).json()["results"]
    for post, r in zip(posts, batch, strict=True):
        single = client.post("/predict", json={"text": post["text"], **({"context": post["context"]}
                                                                        if "context" in post else {})})
        assert _tier(r) == pytest.approx(_tier(single.json()["results"][0]), abs=1e-5)
    assert batch[2]["context"]["used"] == ["vip"]


def test_unseen_channel_is_reported_not_silently_used(client) -> None:
    r = client.post("/predict", json={"text": TEXT, "context": {"channel": "火星新闻"}}).json()["results"][0]
    assert r["context"]["used"] == [] and "channel" in r["context"]["unknown"]
    assert any("火星新闻" in n for n in r["context"]["notes"])
    unknown = client.post("/predict", json={"text": TEXT}).json()["results"][0]
    assert _tier(r) == pytest.approx(_tier(unknown), abs=1e-6)


def test_explanation_gives_each_context_fields_contribution(client) -> None:
    r = client.post("/predict", json={"text": TEXT, "context": FULL, "explain": True}).json()["results"][0]
    ctx = r["explanation"]["tier"]["context"]
    assert {c["field"] for c in ctx} == set(Context.field_names())
    assert [abs(c["score"]) for c in ctx] == sorted((abs(c["score"]) for c in ctx), reverse=True)
    shown = {c["field"]: c["value"] for c in ctx}
    assert shown["channel"] == "明星" and shown["vip"] == "true" and shown["author_history"] == "25 posts, median 850"
    assert r["explanation"]["motive"]["context"] == []


@pytest.mark.parametrize(("body", "code", "detail"), [
    ({"text": TEXT, "context": {"chanel": "明星"}}, "E422",
     "unknown context field 'chanel'; known fields: channel, vip, verified, followers, posted_at, author_history"),
    ({"text": TEXT, "context": {"vip": "yes"}}, "E405", "field 'context.vip' must be a boolean"),
    ({"text": TEXT, "context": {"followers": -3}}, "E428", None),
    ({"text": TEXT, "context": {"posted_at": "last tuesday"}}, "E423", None),
    ({"posts": [{"text": TEXT, "context": {"posted_at": "2025-13-01"}}]}, "E423", None),
    ({"text": TEXT, "context": {"author_history": {"posts": 3, "mean": 2}}}, "E422", None),
    ({"texts": [TEXT], "context": {"vip": True}}, "E426",
     "'context' goes with 'text'; for a batch give 'posts' with a context each"),
    ({"text": TEXT, "posts": [{"text": TEXT}]}, "E404", "exactly one of 'text', 'texts' or 'posts' must be given"),
    ({"posts": [{"text": "  "}]}, "E401", None),
])
def test_bad_context_is_a_precise_422(client, body: dict, code: str, detail: str | None) -> None:
    res = client.post("/predict", json=body)
    assert res.status_code == 422, res.text
    got = res.json()  # clients match on the code; the detail names the field for people
    assert set(got) == {"detail", "code"} and got["detail"] and got["code"] == code
    if detail is not None:
        assert got["detail"] == detail
    if code == "E423":
        assert "posted_at" in got["detail"] and "ISO 8601" in got["detail"]
    if code == "E428" and detail is None:
        assert "context.followers" in got["detail"]


def test_a_text_only_model_says_it_ignored_the_context(client, versions) -> None:
    r = client.post("/predict", json={"text": TEXT, "context": {"vip": True}, "model": "canary"}).json()["results"][0]
    assert r["context"]["used"] == []
    assert r["context"]["notes"] == ["this model reads text only; context was ignored"]


def test_models_lists_the_known_channels(client) -> None:
    assert client.get("/models").json()["channels"] == ["明星", "热门", "社会"]
