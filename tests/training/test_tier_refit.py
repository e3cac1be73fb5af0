"""The forward-checked tier head (training/tier_refit.py): the split in time, the fit, the install."""

from __future__ import annotations

import numpy as np
import torch

from sharelens.context_features import ContextFeatures
from sharelens.labels import TIERS
from sharelens.post import Context
from training.metrics import tier_metrics
from training.tier_refit import TierHeadSettings, fit_tier_head, forward_cut, install_tier_head

CHANNELS = ("同城", "社会", "明星", "榜单")  # in the synthetic data, channel k means tier k


def test_forward_cut_is_the_median_posting_date():
    rows = [{"posted_at": d} for d in ("2025-01-01", "2025-01-01", "2025-01-02", "2025-01-04", "2025-01-05")]
    assert forward_cut(rows) == "2025-01-02"
    rows = [{"posted_at": f"2025-01-0{d}T10:00:00+08:00"} for d in (1, 2, 3, 4)]
    assert forward_cut(rows) == "2025-01-02"  # the earlier half is on or before the cut: 2 of 4
    assert forward_cut([{"posted_at": None}, {"text": "x"}]) is None


def _synthetic(n: int, seed: int):
    """Pooled vectors of noise with a weak text signal; the channel decides the tier."""
    g = torch.Generator().manual_seed(seed)
    features = ContextFeatures(channels=tuple(sorted(CHANNELS)))
    y = torch.randint(0, len(TIERS), (n,), generator=g)
    z = torch.randn(n, 16, generator=g)
    z[:, 0] += 0.5 * y.float()
    ids = torch.tensor([features.encode(Context(channel=CHANNELS[int(t)])) for t in y])
    return features, z, ids, y


def test_fit_tier_head_learns_the_context_and_is_deterministic():
    features, z, ids, y = _synthetic(1200, seed=0)
    _, zt, idst, yt = _synthetic(400, seed=1)
    settings = TierHeadSettings(epochs=8)
    head = fit_tier_head(z, ids, y, features.sizes(), settings)
    full = tier_metrics(yt.numpy(), head.probabilities(zt, idst))
    text_only = tier_metrics(yt.numpy(), head.probabilities(zt, torch.zeros_like(idst)))
    assert full["qwk"] > 0.9  # the channel gives the tier away
    assert 0.1 < text_only["qwk"] < full["qwk"]  # context dropout leaves a text-only answer that is weaker
    again = fit_tier_head(z, ids, y, features.sizes(), settings)
    assert np.array_equal(head.logits(zt, idst), again.logits(zt, idst))
    other = fit_tier_head(z, ids, y, features.sizes(), TierHeadSettings(epochs=8, seed=1))
    assert not np.array_equal(head.logits(zt, idst), other.logits(zt, idst))


def test_class_balance_moves_the_decisions_towards_rare_tiers():
    features, z, ids, y = _synthetic(1200, seed=0)
    keep = (y == 0) | (torch.rand(len(y), generator=torch.Generator().manual_seed(2)) < 0.15)
    z, ids, y = z[keep], ids[keep], y[keep]  # mostly `low`, as the ordinary accounts are
    probs = {b: fit_tier_head(z, ids, y, features.sizes(), TierHeadSettings(epochs=8, class_balance=b))
             .probabilities(z, torch.zeros_like(ids)) for b in (0.0, 1.0)}
    assert probs[1.0][:, 0].mean() < probs[0.0][:, 0].mean()


def test_install_tier_head_grows_the_vocabulary_of_the_model(tiny_bundle):
    from sharelens.bundle import load_model, save_bundle, verify_bundle

    info = verify_bundle(tiny_bundle)
    model, tokenizer = load_model(info, runtime="transformers")
    hidden = model.config.hidden_size
    features = ContextFeatures(channels=tuple(sorted((*model.context_features.channels, "财经", "股市"))))
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, len(TIERS), (200,), generator=g)
    z = torch.randn(200, hidden, generator=g)
    ids = torch.tensor([features.encode(Context(channel="股市")) for _ in y])
    head = fit_tier_head(z, ids, y, features.sizes(), TierHeadSettings(epochs=2))
    install_tier_head(model, head, features)
    assert model.config.context_sizes == features.sizes() and model.context_features is features
    out = model.heads(z[:3], ids[:3])
    assert np.allclose(out.tier_logits.detach().numpy(), head.logits(z[:3], ids[:3]), atol=1e-5)
    # what the bundle saves loads back with the grown vocabulary
    saved = save_bundle(tiny_bundle.parent / "grown", model, tokenizer, {"max_length": 64, "profile": "test"},
                        context_features=features)
    loaded, _ = load_model(verify_bundle(saved), runtime="transformers")
    assert loaded.context_features.knows_channel("股市") and loaded.config.context_sizes == features.sizes()


def _records(texts, split, dates, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i, text in enumerate(texts):
        tier = int(rng.integers(0, len(TIERS)))
        out.append({"text": text, "domain": "feed", "split": split, "tier": TIERS[tier], "channel": CHANNELS[tier],
                    "vip": bool(i % 2), "posted_at": dates[i % len(dates)], "observed_at": "2025-01-09T20:00:00+08:00",
                    "author_history": None, "followers": None, "verified": None})
    return out


def test_refit_tier_head_checks_forward_then_trains_on_the_recent_posts(tiny_bundle, real_posts):
    from sharelens.bundle import load_model, verify_bundle
    from training.tier_refit import refit_tier_head

    model, tokenizer = load_model(verify_bundle(tiny_bundle), runtime="transformers")
    corpus = {"train": _records(real_posts[:120], "train", ["2024-12-20"], 0),
              "validation": _records(real_posts[120:180], "validation", ["2025-01-01", "2025-01-02", "2025-01-03"], 1)}
    report, features = refit_tier_head(model, tokenizer, corpus, ["train"], ["validation", "ordinary_validation"],
                                       max_length=32, settings=TierHeadSettings(epochs=3))
    assert report.recent_splits == ["validation"] and report.train_splits == ["train", "validation"]
    assert report.forward["cut"] == {"validation": "2025-01-02"}
    assert report.forward["train_posts"] == 120 + 40 and report.forward["holdout_posts"] == 20
    assert report.forward["per_domain"]["feed"]["posts"] == 20 and report.temperature is not None
    assert report.train_posts == 180 and report.settings["epochs"] == 3
    assert model.context_features is features and model.config.context_sizes == features.sizes()

    # every recent post on one date: no later half, so nothing held out to fit a temperature on
    corpus["validation"] = _records(real_posts[120:180], "validation", ["2025-01-01"], 1)
    report, _ = refit_tier_head(model, tokenizer, corpus, ["train"], ["validation"], max_length=32,
                                settings=TierHeadSettings(epochs=1))
    assert report.forward["holdout_posts"] == 0 and report.temperature is None and "per_domain" not in report.forward
    assert report.train_posts == 180
