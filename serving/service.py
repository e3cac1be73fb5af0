"""Prediction as a use case: checked posts in, a `PredictResponse` out.

Routes and the CLI both call `predict`, so the terminal shows exactly what the API returns.
`predict_batched` is the API's path for requests without explanations: the same response, with
the model call shared with concurrent requests by the batcher; both build it with `respond`."""

from __future__ import annotations

import time
from collections.abc import Callable

from serving.batcher import Batcher
from serving.explain import Explainer
from serving.explain_control import StopToken
from serving.schemas import (
    ContextUse,
    ModelRef,
    MotiveProbability,
    MotiveResult,
    PredictResponse,
    PredictResult,
    TierProbability,
    TierResult,
)
from serving.store import ModelStore
from sharelens.labels import MOTIVE_ZH, MOTIVES, TIERS
from sharelens.post import Post
from sharelens.predictor import Prediction, Predictor

# (model_version, n_texts, explain, seconds, n_truncated) -> None: where metrics plug in.
Observer = Callable[[str, int, bool, float, int], None]


def is_calibrated(predictor: Predictor) -> bool:
    """Fitted temperatures exist only once `make eval` wrote calibration.json with fitted_on."""
    return predictor.info.calibration.get("fitted_on") is not None  # type: ignore[union-attr]


def _result(predictor: Predictor, pred: Prediction, calibrated: bool) -> PredictResult:
    order = sorted(range(len(MOTIVES)), key=lambda i: -float(pred.motive_probs[i]))
    motives = [MotiveProbability(motive=MOTIVES[i], zh=MOTIVE_ZH[MOTIVES[i]],
                                 probability=float(pred.motive_probs[i])) for i in order]
    tiers = [TierProbability(tier=t, probability=float(pred.tier_probs[i])) for i, t in enumerate(TIERS)]
    return PredictResult(
        motive=MotiveResult(top=pred.motive, top_zh=MOTIVE_ZH[pred.motive], probabilities=motives),
        tier=TierResult(top=pred.tier, probabilities=tiers),
        calibrated=calibrated,
        n_tokens=pred.n_tokens,
        truncated=pred.truncated,
        window_tokens=predictor.max_length,
        context=ContextUse(used=list(pred.context_used), unknown=list(pred.context_unknown),
                           notes=list(pred.context_notes)),
    )


def respond(name: str, predictor: Predictor, posts: list[Post], preds: list[Prediction],
            explainer: Explainer | None = None, explain_motive: str | None = None,
            explain_method: str | None = None, token: StopToken | None = None) -> PredictResponse:
    """Predictions -> the API's answer; explained when an explainer is given."""
    calibrated = is_calibrated(predictor)
    results = []
    for post, pred in zip(posts, preds, strict=True):
        result = _result(predictor, pred, calibrated)
        if explainer is not None:
            result.explanation = explainer.explain(predictor, post, pred, explain_motive or pred.motive,
                                                   method=explain_method, token=token)
        results.append(result)
    return PredictResponse(model=ModelRef(name=name, version=predictor.version), results=results)


def predict(store: ModelStore, posts: list[Post], explainer: Explainer, *, explain: bool = False,
            explain_motive: str | None = None, explain_method: str | None = None, model: str | None = None,
            observe: Observer | None = None, token: StopToken | None = None) -> PredictResponse:
    """Score already-checked posts with the requested model; explain them if asked (by
    `explain_method`, else the explainer's default; `token` stops the work between posts)."""
    predictor = store.get(model)
    start = time.perf_counter()
    preds = predictor.predict(posts)
    response = respond(store.name, predictor, posts, preds, explainer if explain else None, explain_motive,
                       explain_method, token)
    if observe is not None:
        observe(predictor.version, len(posts), explain, time.perf_counter() - start,
                sum(p.truncated for p in preds))
    return response


async def predict_batched(store: ModelStore, batcher: Batcher, posts: list[Post], *, model: str | None = None,
                          observe: Observer | None = None) -> PredictResponse:
    """The same answer as `predict` without explanations; the time observed includes the queue."""
    start = time.perf_counter()
    predictor, preds = await batcher.predict(lambda: store.get(model), posts)
    if observe is not None:
        observe(predictor.version, len(posts), False, time.perf_counter() - start,
                sum(p.truncated for p in preds))
    return respond(store.name, predictor, posts, preds)
