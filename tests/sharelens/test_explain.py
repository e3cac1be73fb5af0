"""The three explanation methods compute what they say they compute, on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharelens.explain import (
    METHODS,
    explain_text,
    gradient_x_input,
    is_punctuation,
    model_scorer,
    occlusion,
    predictor_scorer,
    segment,
)
from sharelens.labels import MOTIVES
from sharelens.predictor import Predictor

TEXT = "转发这条微博，抽三位朋友送新款手机！关注我们了解更多"


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


def _expected_tier(tier_logits: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-tier_logits.astype(np.float64)))).sum(-1)


def test_occlusion_scores_are_the_drop_without_each_word(predictor) -> None:
    """A word's score = the objective with the post - the objective with that word cut out,
    each variant scored on its own (not in the shared batch)."""
    model, tok = predictor.model, predictor.tokenizer
    ex = explain_text(model, tok, TEXT, predictor.max_length, motive="incentive", method="occlusion")
    score = model_scorer(model, tok, predictor.max_length)
    m0, t0 = score([TEXT])
    k = MOTIVES.index("incentive")
    assert [w.text for w in ex.motive.words] == [TEXT[a:b] for a, b in segment(TEXT) if TEXT[a:b] not in "，！"]
    for w, wt in zip(ex.motive.words, ex.tier.words, strict=True):
        m1, t1 = score([TEXT[:w.start] + TEXT[w.end:]])
        assert w.score == pytest.approx(float(m0[0, k] - m1[0, k]), abs=1e-4)
        assert wt.score == pytest.approx(float(_expected_tier(t0)[0] - _expected_tier(t1)[0]), abs=1e-4)
    assert np.isnan(ex.motive.delta)  # completeness is not a property of occlusion


def test_occlusion_with_the_served_scorer_equals_the_network_scorer(predictor) -> None:
    """The server re-scores variants with Predictor.logits (its batching, padding and context);
    on the fp32 backend that must give the scores of the plain network."""
    model, tok = predictor.model, predictor.tokenizer
    served = occlusion(TEXT, segment(TEXT), 0, predictor_scorer(predictor, predictor.context_ids([TEXT_POST()])))
    plain = occlusion(TEXT, segment(TEXT), 0, model_scorer(model, tok, predictor.max_length))
    np.testing.assert_allclose(served[0], plain[0], atol=1e-4)
    np.testing.assert_allclose(served[1], plain[1], atol=1e-4)


def TEXT_POST():  # noqa: N802 - a post of TEXT with unknown context
    from sharelens.post import Post

    return Post(TEXT)


def test_gradient_x_input_is_the_gradient_at_the_post_times_its_distance_from_the_baseline(predictor) -> None:
    model, tok = predictor.model, predictor.tokenizer
    enc = tok(TEXT, return_tensors="pt", return_special_tokens_mask=True)
    ids, mask, special = enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"]
    pad = tok.pad_token_id or 0
    sm, st, _, _ = gradient_x_input(model, ids, mask, special, pad, 3)
    emb = model.encoder.get_input_embeddings()
    x = emb(ids).detach().requires_grad_(True)
    b = emb(torch.where(special.bool(), ids, torch.full_like(ids, pad))).detach()
    out = model.heads(model.pool(ids, mask, inputs_embeds=x))
    (grad,) = torch.autograd.grad(out.motive_logits[0, 3], x)
    np.testing.assert_allclose(sm, ((x - b) * grad).sum(-1)[0].detach().numpy(), rtol=1e-4, atol=1e-6)
    assert st.shape == sm.shape


@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_the_same_words(predictor, method) -> None:
    ex = explain_text(predictor.model, predictor.tokenizer, TEXT, predictor.max_length, method=method, steps=4)
    assert ex.motive.target in MOTIVES
    kept = "".join(w.text for w in ex.motive.words)
    assert kept in (TEXT, TEXT.replace("，", "").replace("！", ""))  # occlusion leaves punctuation out
    assert all(np.isfinite(w.score) for w in (*ex.motive.words, *ex.tier.words))


def test_punctuation_is_not_a_word_to_occlude() -> None:
    assert is_punctuation("，") and is_punctuation("！？ ") and is_punctuation("……")
    assert not is_punctuation("手机") and not is_punctuation("[微笑]") and not is_punctuation("#抽奖#")


def test_an_unknown_method_is_refused(predictor) -> None:
    with pytest.raises(ValueError, match="unknown explanation method 'lime'"):
        explain_text(predictor.model, predictor.tokenizer, TEXT, predictor.max_length, method="lime")
