"""POST /predict: response shape, batches, explanations on the original text, model choice."""

from __future__ import annotations

import numpy as np
import pytest

from sharelens.labels import MOTIVE_ZH, MOTIVES, TIERS

# A raw post as an editor pastes it: a zero-width space, a t.cn link, emoji, topic, mention.
RAW = "转发\u200b抽奖！关注@小明 并转发  http://t.cn/A6abcd 周五抽3位送蓝牙耳机[微笑]#抽奖活动#\u200b 速来"


def _check_result(r: dict, window: int = 64) -> None:
    probs = r["motive"]["probabilities"]
    assert [p["motive"] for p in probs] != [] and sorted(p["motive"] for p in probs) == sorted(MOTIVES)
    values = [p["probability"] for p in probs]
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=1e-4)
    assert all(p["zh"] == MOTIVE_ZH[p["motive"]] for p in probs)
    assert r["motive"]["top"] == probs[0]["motive"] and r["motive"]["top_zh"] == MOTIVE_ZH[probs[0]["motive"]]
    tiers = r["tier"]["probabilities"]
    assert [t["tier"] for t in tiers] == list(TIERS)
    assert sum(t["probability"] for t in tiers) == pytest.approx(1.0, abs=1e-4)
    cumulative = np.cumsum([t["probability"] for t in tiers])
    assert r["tier"]["top"] == TIERS[int((cumulative < 0.5 - 1e-9).sum())]  # the median tier
    assert isinstance(r["n_tokens"], int) and r["n_tokens"] > 0
    assert r["window_tokens"] == window
    assert r["truncated"] is (r["n_tokens"] > window)


def test_single_text(client, versions) -> None:
    res = client.post("/predict", json={"text": "暴雨预警：今晚有大暴雨，请注意出行安全"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == {"name": "sharelens", "version": versions["production"]}
    assert len(body["results"]) == 1
    r = body["results"][0]
    _check_result(r)
    assert r["calibrated"] is False  # the production bundle has no fitted temperatures
    assert r["explanation"] is None


def test_batch_matches_single_calls(client, real_posts) -> None:
    texts = real_posts[:5]
    batch = client.post("/predict", json={"texts": texts}).json()["results"]
    assert len(batch) == 5
    for text, r in zip(texts, batch, strict=True):
        _check_result(r)
        single = client.post("/predict", json={"text": text}).json()["results"][0]
        assert single["motive"]["top"] == r["motive"]["top"]
        assert single["motive"]["probabilities"][0]["probability"] == pytest.approx(
            r["motive"]["probabilities"][0]["probability"], abs=1e-4)


def test_long_text_is_truncated_and_says_so(client, real_posts) -> None:
    long_text = "".join(real_posts)[:600]
    r = client.post("/predict", json={"text": long_text}).json()["results"][0]
    assert r["truncated"] is True
    assert r["n_tokens"] > r["window_tokens"] == 64


def test_explanation_offsets_index_the_original_text(client) -> None:
    res = client.post("/predict", json={"text": RAW, "explain": True})
    assert res.status_code == 200, res.text
    r = res.json()["results"][0]
    ex = r["explanation"]
    assert ex["motive"]["target"] == r["motive"]["top"]
    assert ex["tier"]["target"] == r["tier"]["top"]
    for part in ("motive", "tier"):
        words = ex[part]["words"]
        assert 0 < len(words) <= 10
        scores = [abs(w["score"]) for w in words]
        assert scores == sorted(scores, reverse=True)
        for w in words:
            assert RAW[w["start"]:w["end"]] == w["word"], w
            assert w["word"].strip() and "[CLS]" not in w["word"] and "[SEP]" not in w["word"]
        spans = sorted((w["start"], w["end"]) for w in words)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def test_explanation_keeps_topic_emoji_mention_and_link_whole(client) -> None:
    from serving.routes import get_settings
    from serving.settings import Settings

    client.app.dependency_overrides[get_settings] = lambda: Settings(explain_top_k=100)
    r = client.post("/predict", json={"text": RAW, "explain": True}).json()["results"][0]
    words = {w["word"] for w in r["explanation"]["motive"]["words"]}
    assert {"#抽奖活动#", "[微笑]", "@小明", "http://t.cn/A6abcd"} <= words


def test_explain_motive_picks_the_target(client) -> None:
    r = client.post("/predict", json={"text": RAW, "explain": True, "explain_motive": "help_seeking"}).json()
    assert r["results"][0]["explanation"]["motive"]["target"] == "help_seeking"


def test_model_by_alias_and_by_version(client, versions) -> None:
    text = "转发抽奖！关注并转发，抽3位送耳机"
    default = client.post("/predict", json={"text": text}).json()
    canary = client.post("/predict", json={"text": text, "model": "canary"}).json()
    by_version = client.post("/predict", json={"text": text, "model": versions["production"]}).json()
    assert default["model"]["version"] == versions["production"]
    assert canary["model"]["version"] == versions["canary"] != versions["production"]
    assert by_version["model"]["version"] == versions["production"]
    assert canary["results"][0]["calibrated"] is True
    assert default["results"][0]["motive"] == by_version["results"][0]["motive"]
    assert default["results"][0]["motive"] != canary["results"][0]["motive"]  # other weights, other answer
