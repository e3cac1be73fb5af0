"""The ordinal head's decision rule."""

from __future__ import annotations

import numpy as np
import torch

from sharelens.modeling import median_tier, tier_probs_from_logits


def test_median_tier_is_the_lowest_tier_reaching_half_the_mass() -> None:
    probs = np.array([[0.4, 0.05, 0.05, 0.5],   # argmax says viral, the median says high
                      [0.5, 0.5, 0.0, 0.0],     # exactly half: the lower tier
                      [0.1, 0.2, 0.3, 0.4],
                      [0.0, 0.0, 0.0, 1.0]])
    assert median_tier(probs).tolist() == [2, 0, 2, 3]
    assert int(median_tier(probs[0])) == 2


def test_median_tier_equals_coral_threshold_counting() -> None:
    """Under the ordinal head, the median is CORAL's rule: how many P(tier > k) exceed 0.5."""
    logits = torch.randn(500, 3) * 3
    probs = tier_probs_from_logits(logits).numpy()
    counted = (torch.cummin(torch.sigmoid(logits), dim=-1).values > 0.5).sum(-1).numpy()
    assert (median_tier(probs) == counted).mean() > 0.99  # float ties at exactly 0.5 aside
