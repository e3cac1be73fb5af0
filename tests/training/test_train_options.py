"""The fine-tuning options of issue 11's experiments: layer-wise learning-rate decay, R-Drop, and the
motive head refit, on a tiny random BERT (no data, no mirror needed)."""

import numpy as np
import pytest
import torch
from transformers import BertConfig

from sharelens.labels import MOTIVES
from sharelens.modeling import IGNORE, ShareLensModel
from training.config import TrainConfig
from training.motive_refit import fit_linear_head
from training.train import parameter_groups, rdrop_kl


@pytest.fixture(scope="module")
def model() -> ShareLensModel:
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    return ShareLensModel.from_config(cfg)


def _lr_of(groups: list[dict], model: ShareLensModel) -> dict[str, float]:
    ids = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {n: ids[id(p)] for n, p in model.named_parameters() if id(p) in ids}


def test_layerwise_decay_scales_each_layer_and_leaves_heads(model: ShareLensModel) -> None:
    cfg = TrainConfig(learning_rate=1e-4, head_learning_rate=1e-3, layerwise_lr_decay=0.5)
    lr = _lr_of(parameter_groups(model, cfg), model)
    assert lr["encoder.encoder.layer.2.attention.self.query.weight"] == pytest.approx(1e-4 * 0.5)
    assert lr["encoder.encoder.layer.0.output.dense.bias"] == pytest.approx(1e-4 * 0.5 ** 3)
    assert lr["encoder.embeddings.word_embeddings.weight"] == pytest.approx(1e-4 * 0.5 ** 4)
    assert lr["motive_head.weight"] == lr["tier_proj.weight"] == pytest.approx(1e-3)
    # every trainable parameter is in exactly one group
    groups = parameter_groups(model, cfg)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_no_decay_is_the_two_rate_optimizer(model: ShareLensModel) -> None:
    lr = _lr_of(parameter_groups(model, TrainConfig(learning_rate=2e-5, head_learning_rate=1e-3)), model)
    assert {v for n, v in lr.items() if n.startswith("encoder.")} == {2e-5}
    assert {v for n, v in lr.items() if not n.startswith("encoder.")} == {1e-3}


def test_rdrop_kl_is_symmetric_zero_on_equal_and_ignores_unread_posts() -> None:
    a, b = torch.randn(4, len(MOTIVES)), torch.randn(4, len(MOTIVES))
    labels = torch.tensor([1, IGNORE, 3, IGNORE])
    assert rdrop_kl(a, a, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert rdrop_kl(a, b, labels).item() == pytest.approx(rdrop_kl(b, a, labels).item())
    assert rdrop_kl(a, b, labels).item() > 0
    # posts without a read motive do not count
    b2 = b.clone()
    b2[1] += 100
    assert rdrop_kl(a, b2, labels).item() == pytest.approx(rdrop_kl(a, b, labels).item())
    assert rdrop_kl(a, b, torch.full((4,), IGNORE)).item() == 0.0


def test_motive_head_refit_learns_separable_classes() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(MOTIVES), 8)) * 3
    y = torch.from_numpy(rng.integers(0, len(MOTIVES), 600))
    z = torch.from_numpy((centres[y.numpy()] + rng.normal(size=(600, 8))).astype(np.float32))
    torch.manual_seed(0)  # the head's initialisation must not depend on which tests ran before
    head = torch.nn.Linear(8, len(MOTIVES))
    before = (head(z).argmax(-1) == y).float().mean().item()
    fit_linear_head(head, z, y, torch.ones(len(MOTIVES)), epochs=40)
    after = (head(z).argmax(-1) == y).float().mean().item()
    assert after > 0.85 and after > before + 0.5


def test_averaged_heads_give_the_mean_of_their_logits() -> None:
    from training.motive_refit import average_linear_heads

    torch.manual_seed(0)
    heads = [torch.nn.Linear(8, len(MOTIVES)) for _ in range(3)]
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = torch.stack([h(x) for h in heads]).mean(0)
        assert torch.allclose(average_linear_heads(heads)(x), expected, atol=1e-6)
        assert not torch.allclose(heads[0](x), expected)


def test_config_refuses_a_refit_without_seeds() -> None:
    from sharelens.errors import SharelensError

    with pytest.raises(SharelensError, match="E325.*motive_refit_seeds is 0"):
        TrainConfig(motive_refit_seeds=0)
