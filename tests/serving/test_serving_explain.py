"""The explainer: sound IG (completeness), words that read as words, offsets into the raw text."""

from __future__ import annotations

import numpy as np
import pytest

from serving.explain import raw_span
from sharelens.explain import char_scores, explain_text, segment
from sharelens.text import normalise


def test_segment_keeps_topics_emoji_mentions_whole() -> None:
    text = "关注@小明_01 转发#抽奖活动#送[微笑]好礼"
    words = [text[a:b] for a, b in segment(text)]
    assert "".join(words) == text
    assert {"@小明_01", "#抽奖活动#", "[微笑]"} <= set(words)


def test_char_scores_split_tokens_evenly_and_skip_specials_and_spaces() -> None:
    text = "ab 你好"
    scores, covered = char_scores(text, np.array([9.0, 2.0, 3.0, 9.0]), [(0, 0), (0, 2), (2, 5), (0, 0)],
                                  [1, 0, 0, 1])
    assert scores.tolist() == pytest.approx([1.0, 1.0, 0.0, 1.5, 1.5])
    assert covered.tolist() == [True, True, False, True, True]


def test_raw_span_maps_the_link_placeholder_to_the_whole_url() -> None:
    raw = "看这里  http://t.cn/A6x\u200b 很\u200b重要"
    norm = normalise(raw)
    start = norm.text.index("[链接]")
    a, b = raw_span(raw, norm, start, start + len("[链接]"))
    assert raw[a:b] == "http://t.cn/A6x"
    k = norm.text.index("很重要")
    a, b = raw_span(raw, norm, k, k + 3)
    assert raw[a:b] == "很\u200b重要"  # the raw slice, zero-width char included


def test_integrated_gradients_is_complete(store, real_posts) -> None:
    """Token scores sum to F(x) - F(baseline): the defining property of IG."""
    predictor = store.get(None)
    for text in real_posts[:3]:
        ex = explain_text(predictor.model, predictor.tokenizer, text, predictor.max_length, steps=16)
        assert ex.motive.delta < 1e-3 and ex.tier.delta < 1e-3
        assert ex.motive.words and all(w.text.strip() for w in ex.motive.words)


def test_words_past_the_window_get_no_score(store, real_posts) -> None:
    predictor = store.get(None)
    text = "".join(real_posts)[:600]
    ex = explain_text(predictor.model, predictor.tokenizer, text, predictor.max_length, steps=4)
    assert max(w.end for w in ex.motive.words) < len(text) // 2
