"""Are the explanations faithful, and what do they cost? AOPC comprehensiveness and sufficiency
against a random-word baseline, and latency, for each explanation method.

For each post: take the predicted top motive m and its probability p.
- Comprehensiveness (DeYoung et al. 2020; AOPC, Samek et al. 2017): delete the k words the
  explainer says push m up the most and re-score; the drop p - p_k measures how much the model
  relied on them. Higher is better. Baseline: the same with k random words deleted.
- Sufficiency: keep only those k words and re-score; the drop p - p_k is how much the model
  loses without the rest. Lower is better. Baseline: keep k random words.
Both are averaged over k in `k_values`; faithful explanations beat the random baseline on both.

`make bench` prints one row per method (`compare_methods`); alone:
`python -m benchmarks.faithfulness --input posts.jsonl [--methods occlusion,integrated_gradients]`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sharelens.explain import DEFAULT_STEPS, METHODS, Word, explain_text, predictor_scorer
from sharelens.labels import MOTIVE2ID
from sharelens.paths import models_dir
from sharelens.post import Post
from sharelens.predictor import Predictor


@dataclass
class AopcResult:
    k_values: tuple[int, ...]
    attributed: float  # comprehensiveness: mean probability drop, top-k attributed words deleted (mean over k)
    random: float  # the same with k random words deleted
    ratio: float | None  # attributed / random; None when the random drop is ~0 or negative
    per_k: dict[int, dict[str, float]]
    n_texts: int  # posts used (those with at least one word the model saw)
    sufficiency: float = float("nan")  # mean drop when only the top-k attributed words are kept (lower: better)
    sufficiency_random: float = float("nan")  # the same keeping k random words
    method: str = "integrated_gradients"
    steps: int | None = DEFAULT_STEPS  # path methods only
    latency_ms: list[float] = field(default_factory=list, compare=False)  # one explanation (both targets) per post

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.latency_ms) if self.latency_ms else None

    @property
    def p95_ms(self) -> float | None:
        if not self.latency_ms:
            return None
        xs = sorted(self.latency_ms)
        return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def delete_words(text: str, words: list[Word]) -> str:
    """The text with the given word spans cut out (spans of the normalised text)."""
    keep = np.ones(len(text), dtype=bool)
    for w in words:
        keep[w.start:w.end] = False
    return "".join(c for c, k in zip(text, keep, strict=True) if k)


def keep_words(text: str, words: list[Word]) -> str:
    """Only the given word spans, in text order."""
    return "".join(text[w.start:w.end] for w in sorted(words, key=lambda w: w.start))


def aopc(predictor: Predictor, texts: list[str], k_values: tuple[int, ...] = (1, 3, 5), seed: int = 0,
         steps: int = DEFAULT_STEPS, random_repeats: int = 3, method: str = "integrated_gradients",
         bar=None) -> AopcResult:  # noqa: ANN001 - a tqdm bar, advanced once per text
    """AOPC comprehensiveness and sufficiency of the motive explanations by `method` over `texts`
    (raw posts, context unknown), and the latency of each explanation. Occlusion re-scores with the
    predictor's served network, as the server does."""
    rng = random.Random(seed)
    preds = predictor.predict(texts)
    jobs: list[tuple[int, int, str, str]] = []  # (text index, k, kind, perturbed text)
    base: dict[int, tuple[int, float]] = {}
    latency: list[float] = []
    for i, pred in enumerate(preds):
        text = pred.normalised.text
        m = pred.motive
        ctx = predictor.context_ids([Post.of(texts[i])])
        t0 = time.perf_counter()
        ex = explain_text(predictor.model, predictor.tokenizer, text, predictor.max_length, motive=m, steps=steps,
                          context_ids=ctx, method=method, scorer=predictor_scorer(predictor, ctx))
        latency.append(1000 * (time.perf_counter() - t0))
        if bar is not None:
            bar.update(1)
        words = list(ex.motive.words)
        if not words:
            continue
        base[i] = (MOTIVE2ID[m], float(pred.motive_probs[MOTIVE2ID[m]]))
        ranked = sorted(words, key=lambda w: -w.score)
        for k in k_values:
            kk = min(k, len(words))
            jobs.append((i, k, "attributed", delete_words(text, ranked[:kk])))
            jobs.append((i, k, "sufficiency", keep_words(text, ranked[:kk])))
            for _ in range(random_repeats):
                drawn = rng.sample(words, kk)
                jobs.append((i, k, "random", delete_words(text, drawn)))
                jobs.append((i, k, "sufficiency_random", keep_words(text, drawn)))
    kinds = ("attributed", "random", "sufficiency", "sufficiency_random")
    drops: dict[tuple[int, str], list[float]] = {}
    if jobs:
        rescored = predictor.predict([j[3] or " " for j in jobs])
        for (i, k, kind, _), p in zip(jobs, rescored, strict=True):
            m, p0 = base[i]
            drops.setdefault((k, kind), []).append(p0 - float(p.motive_probs[m]))
    per_k = {k: {kind: float(np.mean(drops.get((k, kind), [0.0]))) for kind in kinds} for k in k_values}
    mean = {kind: float(np.mean([per_k[k][kind] for k in k_values])) for kind in kinds}
    rand = mean["random"]
    ratio = mean["attributed"] / rand if rand > 1e-9 and math.isfinite(mean["attributed"]) else None
    return AopcResult(tuple(k_values), mean["attributed"], rand, ratio, per_k, len(base),
                      sufficiency=mean["sufficiency"], sufficiency_random=mean["sufficiency_random"],
                      method=method, steps=steps if method == "integrated_gradients" else None,
                      latency_ms=latency)


def compare_methods(predictor: Predictor, texts: list[str], methods: tuple[str, ...] = METHODS,
                    seed: int = 0, steps: int = DEFAULT_STEPS, progress: bool = False) -> list[dict]:
    """One row per method: faithfulness and latency on the same posts (`make bench`'s table). `progress`:
    a bar on stderr, one step per explained post."""
    from tqdm import tqdm

    rows = []
    with tqdm(total=len(methods) * len(texts), desc="explain", unit="post", disable=not progress,
              dynamic_ncols=True) as bar:
        for method in methods:
            bar.set_postfix_str(method)
            r = aopc(predictor, texts, seed=seed, steps=steps, method=method, bar=bar)
            rows.append({**asdict(r), "p50_ms": r.p50_ms, "p95_ms": r.p95_ms})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AOPC comprehensiveness of sharelens explanations")
    ap.add_argument("--models-dir", type=Path, default=models_dir())
    ap.add_argument("--name", default="sharelens")
    ap.add_argument("--model", default=None, help="alias or version (default: production, then latest)")
    ap.add_argument("--input", type=Path, required=True, help="JSONL with a `text` field per line")
    ap.add_argument("--n", type=int, default=50, help="posts to use (the first n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integrated Gradients steps")
    ap.add_argument("--backend", default="fp32", choices=("fp32", "int8"), help="the network that re-scores")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from sharelens.registry import Registry

    _, path = Registry(args.models_dir).resolve(args.name, args.model)
    with args.input.open(encoding="utf-8") as fh:
        texts = [t for t in (json.loads(line).get("text", "") for line in fh if line.strip()) if t.strip()]
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"Error E460: unknown explanation method {unknown[0]!r}; one of {', '.join(METHODS)}", file=sys.stderr)
        return 2
    from sharelens.explain import warm_up

    warm_up()
    rows = compare_methods(Predictor.from_bundle(path, backend=args.backend), texts[: args.n], methods,
                           seed=args.seed, steps=args.steps, progress=not args.no_progress)
    json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
