"""The ONNX Runtime peer (sharelens.onnx_runtime) on the tiny bundle: fp32 in ONNX Runtime gives
the torch probabilities, int8 is quantised and close, the export is cached and rebuilt when stale,
a text-only network exports without the context input, and the bench's ONNX function measures and
renders it. Skipped where onnxruntime (the `bench` extra) is not installed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sharelens.bundle import WEIGHTS, load_model, sha256_file, verify_bundle  # noqa: E402
from sharelens.labels import MOTIVES, TIERS  # noqa: E402
from sharelens.onnx_runtime import (  # noqa: E402
    FILES,
    MANIFEST,
    ONNX_DIR,
    OnnxPredictor,
    export_fp32,
    ffn_outputs,
    make_session,
)
from sharelens.post import Context, Post  # noqa: E402
from sharelens.predictor import Predictor  # noqa: E402

QUANTISED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is fastest on one thread; the sessions follow torch's count
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sharp_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with heads scaled x10 (the untrained heads' probabilities sit near
    uniform, where a wrong network could pass a 1e-4 bound), temperatures that are not 1, and a
    torch int8 export (the served int8 path the bench compares with)."""
    from safetensors.torch import load_file, save_file

    from sharelens.quantize import export_int8

    dst = tmp_path_factory.mktemp("onnx") / "sharelens" / tiny_bundle.name
    shutil.copytree(tiny_bundle, dst)
    state = load_file(str(dst / WEIGHTS))
    for key in ("motive_head.weight", "tier_proj.weight", "context.mlp.2.weight"):
        state[key] = state[key] * 10
    save_file(state, str(dst / WEIGHTS))
    meta = json.loads((dst / "bundle.json").read_text(encoding="utf-8"))
    meta["files"][WEIGHTS] = sha256_file(dst / WEIGHTS)
    (dst / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
    (dst / "calibration.json").write_text(json.dumps({"motive_temperature": 1.7, "tier_temperature": 0.6}))
    export_int8(verify_bundle(dst), Predictor.from_bundle(dst).model)
    return dst


def _posts(texts: list[str]) -> list[Post]:
    """Real texts (some beyond the 64-token window), half with context, one unseen channel."""
    ctx = [Context(channel="明星", vip=True, followers=5000), Context(channel="社会", verified=False),
           Context(channel="没见过的频道", posted_at="2025-01-06T20:30:00+08:00")]
    return [Post(t, ctx[i % 3]) if i % 2 else Post(t) for i, t in enumerate(texts)]


def _probs(pred, posts: list[Post], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    out = pred.predict(posts, batch_size=batch_size)
    return np.stack([p.motive_probs for p in out]), np.stack([p.tier_probs for p in out])


def test_fp32_probabilities_equal_torch(sharp_bundle: Path, real_posts: list[str]) -> None:
    torch_pred = Predictor.from_bundle(sharp_bundle)
    ort_pred = OnnxPredictor.from_bundle(sharp_bundle, "fp32")
    assert ort_pred.runtime == "onnxruntime" and ort_pred.backend == "fp32" and ort_pred.threads == 1
    assert ort_pred.folder == sharp_bundle / ONNX_DIR
    assert ort_pred.motive_temperature == pytest.approx(1.7) and ort_pred.tier_temperature == pytest.approx(0.6)
    posts = _posts(real_posts[:48])
    for batch_size in (16, 1):  # padded batches, and single unpadded texts
        m0, t0 = _probs(torch_pred, posts, batch_size)
        m1, t1 = _probs(ort_pred, posts, batch_size)
        assert m0.max(1).mean() > 0.3, "heads too flat for the comparison to mean anything"
        assert np.abs(m1 - m0).max() < 1e-4
        assert np.abs(t1 - t0).max() < 1e-4
    # the context reaches the tier head: the same texts without it give other tier probabilities
    bare = _probs(ort_pred, [Post(p.text) for p in posts], 16)[1]
    assert np.abs(bare - _probs(ort_pred, posts, 16)[1]).max() > 1e-3


def test_int8_is_quantised_and_close(sharp_bundle: Path, real_posts: list[str]) -> None:
    import onnx

    fp32 = OnnxPredictor.from_bundle(sharp_bundle, "fp32")
    int8 = OnnxPredictor.from_bundle(sharp_bundle, "int8")
    ops = {n.op_type for n in onnx.load(str(int8.folder / FILES["int8"])).graph.node}
    assert ops & QUANTISED_OPS, ops
    fused = {n.op_type for n in onnx.load(str(fp32.folder / FILES["fp32"])).graph.node}
    assert "Attention" in fused and not fused & QUANTISED_OPS  # ORT's BERT fusion ran; fp32 stays fp32
    assert len(ffn_outputs(int8.folder / FILES["int8"])) == 2  # one fp32 FFN output per layer of the tiny encoder
    posts = _posts(real_posts[:48])
    m0, t0 = _probs(fp32, posts, 16)
    m1, t1 = _probs(int8, posts, 16)
    assert 0 < np.abs(m1 - m0).max() < 0.1
    assert np.abs(t1 - t0).max() < 0.1
    assert (m1.argmax(1) == m0.argmax(1)).mean() >= 0.85


def test_export_is_cached_and_rebuilt_when_stale(sharp_bundle: Path, tmp_path: Path) -> None:
    first = OnnxPredictor.from_bundle(sharp_bundle, "int8", cache_dir=tmp_path)
    folder = tmp_path / "sharelens" / sharp_bundle.name
    assert first.folder == folder and not (folder.parent / f".{folder.name}.partial").exists()
    stamp = (folder / FILES["fp32"]).stat().st_mtime_ns
    OnnxPredictor.from_bundle(sharp_bundle, "fp32", cache_dir=tmp_path)
    assert (folder / FILES["fp32"]).stat().st_mtime_ns == stamp  # reused
    doc = json.loads((folder / MANIFEST).read_text())
    assert doc["source_weights_sha256"] == sha256_file(sharp_bundle / WEIGHTS)
    doc["source_weights_sha256"] = "0" * 64  # made from other weights: stale
    (folder / MANIFEST).write_text(json.dumps(doc))
    again = OnnxPredictor.from_bundle(sharp_bundle, "fp32", cache_dir=tmp_path)
    assert (folder / FILES["fp32"]).stat().st_mtime_ns != stamp
    assert again.manifest["source_weights_sha256"] == sha256_file(sharp_bundle / WEIGHTS)
    (folder / FILES["int8"]).write_bytes(b"truncated")  # a damaged file: rebuilt, not loaded
    OnnxPredictor.from_bundle(sharp_bundle, "int8", cache_dir=tmp_path).predict(["转发抽奖"])


def test_text_only_network_has_no_context_input(sharp_bundle: Path, tmp_path: Path) -> None:
    model, _ = load_model(verify_bundle(sharp_bundle))
    model.context = None  # the tier head of a bundle made before context existed
    assert model.context_slots == 0
    export_fp32(model, tmp_path / "m.onnx")
    session = make_session(tmp_path / "m.onnx", threads=1)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids = torch.randint(5, model.encoder.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask)
    motive, tier = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert np.abs(motive - ref["motive_logits"].numpy()).max() < 1e-4
    assert np.abs(tier - ref["tier_logits"].numpy()).max() < 1e-4


def test_bench_measures_and_renders_the_onnx_rows(sharp_bundle: Path, real_posts: list[str], tmp_path: Path) -> None:
    from benchmarks import bench
    from training.evaluate import read_records

    labelled = tmp_path / "test.jsonl"
    labelled.write_text("".join(json.dumps({"text": t, "motive": MOTIVES[i % len(MOTIVES)], "tier": TIERS[i % 4],
                                            "channel": "明星"}, ensure_ascii=False) + "\n"
                                for i, t in enumerate(real_posts[:30])), encoding="utf-8")
    o = bench.onnx_bench(real_posts[:20], sharp_bundle, 3, {}, labelled, rounds=1)
    assert "error" not in o and "served_error" not in o, o
    for name in (*bench.ORT_NAMES, bench.SERVED_INT8):
        assert o[name]["single_p50_ms"] > 0 and o[name]["batch_posts_per_s"] > 0
    acc = o["accuracy"]
    assert set(acc) == {bench.SERVED_INT8, *bench.ORT_NAMES}
    assert acc["onnxruntime fp32"]["motive_posts"] == 30 and acc["onnxruntime fp32"]["tier_posts"] == 30
    assert acc["onnxruntime fp32"]["top_motive_agrees_with_fp32"] == 1.0
    torch_fp32 = bench.heads_macro_f1(Predictor.from_bundle(sharp_bundle), read_records(labelled))
    for head in ("motive_macro_f1", "tier_macro_f1"):  # make eval's figure of the torch network
        assert acc["onnxruntime fp32"][head] == pytest.approx(torch_fp32[head])
    out = bench.render({"configs": ["fp32 lean", "int8 lean"], "inprocess": {}, "onnx": o})
    assert "in-process onnxruntime fp32: single p50 / batch" in out
    assert "in-process onnxruntime int8: single p50 / batch" in out
    for name in (*bench.ORT_NAMES, bench.SERVED_INT8):
        assert f"macro-F1 motive / tier, {name} (30 / 30 labelled posts)" in out
    assert out.splitlines()[-1].startswith("Verdict: served int8 lean vs ORT int8: single p50 x")


def test_the_onnxruntime_runtime_serves_through_predictor_and_the_store(sharp_bundle: Path) -> None:
    """SHARELENS_RUNTIME=onnxruntime: Predictor.from_bundle and the store's loader give an ONNX
    Runtime predictor on the server's threads per call, with the torch network's probabilities."""
    from serving.store import loader_for

    torch_pred = Predictor.from_bundle(sharp_bundle)
    ort_pred = Predictor.from_bundle(sharp_bundle, backend="fp32", runtime="onnxruntime", threads=1)
    assert isinstance(ort_pred, OnnxPredictor) and ort_pred.runtime == "onnxruntime" and ort_pred.threads == 1
    texts = ["转发这条微博抽奖送手机", "暴雨预警：今晚有大暴雨，注意出行安全"]
    for a, b in zip(torch_pred.predict(texts), ort_pred.predict(texts), strict=True):
        np.testing.assert_allclose(a.motive_probs, b.motive_probs, atol=1e-4)
        np.testing.assert_allclose(a.tier_probs, b.tier_probs, atol=1e-4)
    served = loader_for("int8", "onnxruntime", threads=1)(sharp_bundle)
    assert isinstance(served, OnnxPredictor) and served.precision == "int8" and served.threads == 1


def test_the_onnxruntime_runtime_is_refused_off_the_cpu(sharp_bundle: Path) -> None:
    from sharelens.errors import SharelensError

    with pytest.raises(SharelensError) as exc:
        Predictor.from_bundle(sharp_bundle, runtime="onnxruntime", device="cuda")
    assert exc.value.code == "E254"
