"""AOPC comprehensiveness runs on ~50 posts in seconds and returns finite numbers."""

from __future__ import annotations

import math
import time

from serving.faithfulness import aopc


def test_aopc_returns_finite_numbers(store, real_posts) -> None:
    start = time.perf_counter()
    result = aopc(store.get(None), real_posts[:50], k_values=(1, 3, 5), seed=0)
    elapsed = time.perf_counter() - start
    assert result.n_texts > 40
    assert math.isfinite(result.attributed) and math.isfinite(result.random)
    assert result.ratio is None or math.isfinite(result.ratio)
    assert set(result.per_k) == {1, 3, 5}
    assert elapsed < 60


def test_aopc_is_deterministic_given_a_seed(store, real_posts) -> None:
    a = aopc(store.get(None), real_posts[:8], seed=3)
    b = aopc(store.get(None), real_posts[:8], seed=3)
    assert a == b
