"""The predictor with context: the one-pass logits equal pooled vectors + heads (what evaluation
uses for its tier table), context changes only the tier, and strings are posts without context."""

import numpy as np

from sharelens.post import AuthorHistory, Context, Post
from sharelens.predictor import Predictor
from sharelens.text import normalise_text


def test_pooled_then_heads_equals_logits(tiny_bundle) -> None:
    pred = Predictor.from_bundle(tiny_bundle)
    posts = [Post("暴雨预警：今晚有大暴雨", Context(channel="社会", vip=True)),
             Post("转发抽奖送耳机", Context(followers=12, author_history=AuthorHistory(4, 120.0))),
             Post("新年快乐")]
    texts = [normalise_text(p.text) for p in posts]
    ids = pred.context_ids(posts)
    raw, _ = pred.logits(texts, context_ids=ids)
    two_step = pred.head_logits(pred.pooled(texts), ids)
    np.testing.assert_allclose(two_step.tier_logits, raw.tier_logits, atol=1e-5)
    np.testing.assert_allclose(two_step.motive_logits, raw.motive_logits, atol=1e-5)


def test_context_moves_the_tier_not_the_motive(tiny_bundle) -> None:
    pred = Predictor.from_bundle(tiny_bundle)
    plain, with_ctx = pred.predict(["转发抽奖送耳机", Post("转发抽奖送耳机", Context(channel="明星", vip=True))])
    np.testing.assert_allclose(plain.motive_probs, with_ctx.motive_probs, atol=1e-6)
    assert not np.allclose(plain.tier_probs, with_ctx.tier_probs, atol=1e-6)
    assert with_ctx.context_used == ("channel", "vip") and plain.context_used == ()
