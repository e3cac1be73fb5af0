"""Are the explanations faithful? AOPC comprehensiveness against a random-deletion baseline.

For each post: take the predicted top motive m and its probability p; delete the k words the
explainer says push m up the most and re-score; the drop p - p_k measures how much the model
really relied on them (DeYoung et al. 2020, "comprehensiveness"; Samek et al. 2017, AOPC). The
same drop after deleting k random words of the same post is the baseline: faithful explanations
drop the probability clearly more than chance, so `ratio` = attributed / random should be > 1.

`make bench` reports it: `python -m serving.faithfulness --models-dir models --input posts.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sharelens.explain import DEFAULT_STEPS, Word, explain_text
from sharelens.labels import MOTIVE2ID
from sharelens.predictor import Predictor


@dataclass
class AopcResult:
    k_values: tuple[int, ...]
    attributed: float  # mean probability drop, top-k attributed words deleted (averaged over k)
    random: float  # the same with k random words deleted
    ratio: float | None  # attributed / random; None when the random drop is ~0 or negative
    per_k: dict[int, dict[str, float]]
    n_texts: int  # posts used (those with at least one word the model saw)


def delete_words(text: str, words: list[Word]) -> str:
    """The text with the given word spans cut out (spans of the normalised text)."""
    keep = np.ones(len(text), dtype=bool)
    for w in words:
        keep[w.start:w.end] = False
    return "".join(c for c, k in zip(text, keep, strict=True) if k)


def aopc(predictor: Predictor, texts: list[str], k_values: tuple[int, ...] = (1, 3, 5), seed: int = 0,
         steps: int = DEFAULT_STEPS, random_repeats: int = 3) -> AopcResult:
    """AOPC comprehensiveness of the motive explanations over `texts` (raw posts)."""
    rng = random.Random(seed)
    preds = predictor.predict(texts)
    jobs: list[tuple[int, int, str, str]] = []  # (text index, k, "attributed"|"random", perturbed text)
    base: dict[int, tuple[int, float]] = {}
    for i, pred in enumerate(preds):
        text = pred.normalised.text
        m = pred.motive
        ex = explain_text(predictor.model, predictor.tokenizer, text, predictor.max_length, motive=m, steps=steps)
        words = list(ex.motive.words)
        if not words:
            continue
        base[i] = (MOTIVE2ID[m], float(pred.motive_probs[MOTIVE2ID[m]]))
        ranked = sorted(words, key=lambda w: -w.score)
        for k in k_values:
            kk = min(k, len(words))
            jobs.append((i, k, "attributed", delete_words(text, ranked[:kk])))
            for _ in range(random_repeats):
                jobs.append((i, k, "random", delete_words(text, rng.sample(words, kk))))
    drops: dict[tuple[int, str], list[float]] = {}
    if jobs:
        rescored = predictor.predict([j[3] or " " for j in jobs])
        for (i, k, kind, _), p in zip(jobs, rescored, strict=True):
            m, p0 = base[i]
            drops.setdefault((k, kind), []).append(p0 - float(p.motive_probs[m]))
    per_k = {k: {kind: float(np.mean(drops.get((k, kind), [0.0]))) for kind in ("attributed", "random")}
             for k in k_values}
    attributed = float(np.mean([per_k[k]["attributed"] for k in k_values]))
    rand = float(np.mean([per_k[k]["random"] for k in k_values]))
    ratio = attributed / rand if rand > 1e-9 and math.isfinite(attributed) else None
    return AopcResult(tuple(k_values), attributed, rand, ratio, per_k, len(base))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AOPC comprehensiveness of sharelens explanations")
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--name", default="sharelens")
    ap.add_argument("--model", default=None, help="alias or version (default: production, then latest)")
    ap.add_argument("--input", type=Path, required=True, help="JSONL with a `text` field per line")
    ap.add_argument("--n", type=int, default=50, help="posts to use (the first n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from sharelens.registry import Registry

    _, path = Registry(args.models_dir).resolve(args.name, args.model)
    with args.input.open(encoding="utf-8") as fh:
        texts = [t for t in (json.loads(line).get("text", "") for line in fh if line.strip()) if t.strip()]
    result = aopc(Predictor.from_bundle(path), texts[: args.n], seed=args.seed)
    json.dump(asdict(result), sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
