"""The API's explainer: runs `sharelens.explain` for one prediction and maps every word back
to character offsets in the text the caller sent, so that `text[start:end] == word` holds and a
client can highlight its own string without re-normalising it."""

from __future__ import annotations

import threading

from serving import errors
from serving.explain_control import StopToken
from serving.memory import trim
from serving.schemas import ContextScore, Explanation, TargetExplanation, WordScore
from sharelens.explain import (
    DEFAULT_METHOD,
    OCCLUSION_MAX_SPANS,
    Attribution,
    context_contributions,
    explain_text,
    predictor_scorer,
)
from sharelens.post import Post
from sharelens.predictor import Prediction, Predictor
from sharelens.text import _ZERO_WIDTH, Normalised  # the characters normalise() drops

MOTIVE_OBJECTIVE = "logit of the motive '{motive}'"
# What one word's score means, by method.
METHOD_MEANING = {
    "occlusion": "the objective with the post minus the objective without this word (on a long post: without "
                 "this run of neighbouring words)",
    "integrated_gradients": "this word's share of the objective's change from the post without its words "
                            "(Integrated Gradients; the scores sum to that change)",
    "gradient_x_input": "the objective's gradient times this word's embedding, relative to padding",
}
TIER_OBJECTIVE = "expected tier, sum_k sigmoid(tier_logit_k): positive pushes towards higher tiers"


def set_thread_count(n: int) -> None:
    """torch intra-op threads of the calling thread (OpenMP keeps the count per thread)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def raw_span(raw: str, norm: Normalised, start: int, end: int) -> tuple[int, int]:
    """[start, end) of the normalised text -> the raw text.

    `Normalised.offsets` maps each kept character to its raw index; the one place where that is
    not enough is the link placeholder "[链接]", whose characters all point at the URL's first
    character: there the span runs to the raw URL's end."""
    raw_start, raw_end = norm.raw_span(start, end)
    last = end - 1
    if raw[norm.offsets[last]] != norm.text[last]:  # the span ends inside a placeholder
        k = end  # skip the placeholder's own padding, which points at the URL too
        while k < len(norm.offsets) and norm.offsets[k] == norm.offsets[last]:
            k += 1
        stop = norm.offsets[k] if k < len(norm.offsets) else len(raw)
        while stop > raw_end and (raw[stop - 1].isspace() or raw[stop - 1] in _ZERO_WIDTH):
            stop -= 1
        raw_end = max(raw_end, stop)
    return raw_start, raw_end


def _words(raw: str, pred: Prediction, attribution: Attribution, top_k: int) -> list[WordScore]:
    out = []
    for w in attribution.top(top_k):
        start, end = raw_span(raw, pred.normalised, w.start, w.end)
        out.append(WordScore(word=raw[start:end], start=start, end=end, score=round(w.score, 6)))
    return out


class Explainer:
    """threads: torch intra-op threads for the calling thread while it explains (None: leave them).
    Model calls without explanations run single-threaded on the batcher's threads; an
    explanation (a batched forward pass over a post's variants, or forward and backward passes
    over `steps` copies of it) is one large job that several cores finish sooner: 1.6 s -> 0.6 s
    per post of Integrated Gradients with 2 threads on the 2-core machine. The setting is per
    thread for OpenMP, so the batcher's threads keep theirs.

    After each explanation the freed activations are handed back to the kernel
    (`serving.memory.trim`): without it a server's resident memory grew from 0.5 to 1.3 GiB
    over ten explanations and stayed there.

    stop: set when the server's shutdown budget is spent (serving.shutdown). `token` (given per
    call): the request's deadline and its client's disconnect (serving.explain_control). Both are
    checked before each post and between its two parts: work whose request was cut or abandoned
    would otherwise run to its end (16 posts of seconds each) in a thread the interpreter waits for
    at exit. One post's explanation itself is not interrupted.

    method: the default explanation method (sharelens.explain.METHODS); a request may ask for
    another. Occlusion re-scores with the served network (int8 where that is served)."""

    def __init__(self, steps: int = 16, top_k: int = 10, threads: int | None = None,
                 stop: threading.Event | None = None, method: str = DEFAULT_METHOD,
                 max_words: int = OCCLUSION_MAX_SPANS) -> None:
        self.steps = steps
        self.top_k = top_k
        self.threads = threads
        self.stop = stop
        self.method = method
        self.max_words = max_words

    def _check_stop(self, token: StopToken | None) -> None:
        if self.stop is not None and self.stop.is_set():
            raise errors.shutting_down()
        if token is not None:
            token.check()

    def explain(self, predictor: Predictor, post: Post | str, pred: Prediction, motive: str,
                method: str | None = None, token: StopToken | None = None) -> Explanation:
        self._check_stop(token)
        post = Post.of(post)
        raw = post.text
        method = method or self.method
        if self.threads:
            set_thread_count(self.threads)
        try:
            ctx = predictor.context_ids([post])
            ex = explain_text(predictor.model, predictor.tokenizer, pred.normalised.text, predictor.max_length,
                              motive=motive, steps=self.steps, context_ids=ctx, method=method,
                              scorer=predictor_scorer(predictor, ctx), max_spans=self.max_words)
            self._check_stop(token)
            contributions = context_contributions(predictor.model, predictor.features, predictor.tokenizer,
                                        pred.normalised.text, post.context, predictor.max_length)
        finally:
            trim()
        return Explanation(
            method=method, score_meaning=METHOD_MEANING[method],
            motive=TargetExplanation(target=motive, objective=MOTIVE_OBJECTIVE.format(motive=motive),
                                     words=_words(raw, pred, ex.motive, self.top_k)),
            tier=TargetExplanation(target=pred.tier, objective=TIER_OBJECTIVE,
                                   words=_words(raw, pred, ex.tier, self.top_k),
                                   context=[ContextScore(field=c.field, value=c.value, score=round(c.score, 6))
                                            for c in contributions]),
        )
