"""ONNX Runtime as a peer of sharelens' own inference paths: a bundle's whole network (encoder,
mean pooling, both heads, the tier head's context input) exported to ONNX, an int8 copy made by
`onnxruntime.quantization.quantize_dynamic`, and a Predictor that runs either in an
`onnxruntime.InferenceSession`. `make bench` measures it beside the fp32 and int8 lean paths
(`benchmarks.bench.onnx_bench`); nothing serves it.

Why here, in `sharelens` and not in `serving/`: this is one more way to run a bundle, the same
layer as `sharelens.quantize` (an export stored beside the bundle, verified against the bundle's
weights) and `sharelens.predictor` (it *is* a Predictor: tokenisation, length-sorted padding,
context ids and calibration are inherited, not copied, so its inputs and its probabilities are
computed exactly as the served paths compute theirs). Should the bench ever say "serve it", the
service can load it from where the other backends live. onnxruntime and onnx are optional (the
`bench` extra): nothing here imports them before an export or a session is asked for, and
`unavailable()` says in one line why they cannot be used.

    <bundle>/onnx/                a cache (models/ is not in git), rebuilt when stale
      model.fp32.onnx             the network; dynamic batch and sequence axes
      model.int8.onnx             quantize_dynamic of it
      manifest.json               format, sha256 of the bundle weights it was made from, recipe,
                                  torch / onnx / onnxruntime versions, fused operators
A bundle folder that cannot be written caches under the temp dir instead (`cache_folder`).

The export: torch's TorchScript exporter (`dynamo=False`, opset 17), which exports this network
in 3 s (the dynamo exporter: 14 s) into the graph ONNX Runtime's BERT optimiser recognises; the
encoder is written out as classic BERT attention (QK^T / sqrt(d) + additive mask, softmax, V),
the same function as `sharelens.lean_bert` (which calls SDPA and skips the mask for an unpadded
batch: a data-dependent branch a traced graph cannot keep). `onnxruntime.transformers.optimizer`
then fuses it (12 Attention, 25 SkipLayerNormalization, 12 BiasGelu on multilingual-e5-small),
ONNX Runtime's documented recipe for BERT on CPU. An encoder the lean runtime cannot build is
exported through its own forward and not fused.

int8 (`QUANT_RECIPE`): `quantize_dynamic` with int8 weights per output channel and uint8
activations per tensor at run time, on the encoder's fused Attention (Q, K, V) and MatMul nodes
(embeddings, LayerNorms and the two heads stay fp32, as in `sharelens.quantize`: the heads are
Gemm nodes, which dynamic quantisation does not touch), except the 12 FFN output MatMuls (those
reading a GELU's output), kept fp32 with `nodes_to_exclude`: their inputs carry the outlier
channels that `sharelens.quantize` handles with SmoothQuant, and per-tensor uint8 activations
crush the rest. Chosen on the validation split (v0003, top-motive agreement with fp32 over 442
posts): 89.4% for per-tensor weights on every MatMul, 93.2% per channel with the embeddings
(Gather) too, 93.9% per channel on every MatMul, 98.6% with the FFN outputs kept fp32, 99.3%
quantising the Attention nodes alone (slower). No SmoothQuant: ONNX Runtime's own tools only.

Threads: `intra_op_num_threads` = torch's intra-op thread count unless given (on this 2-core
machine 2, the same as the in-process torch predictors it is compared with), one inter-op
thread and sequential execution (a BERT graph is a chain: no branches to run in parallel), all
graph optimisations; ONNX Runtime's default spin-waiting is kept, as torch's OpenMP also spins.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharelens.bundle import WEIGHTS, BundleInfo, load_model, sha256_file, verify_bundle, write_json
from sharelens.errors import SharelensError
from sharelens.predictor import Predictor

ONNX_DIR = "onnx"
ONNX_FORMAT = "sharelens-onnx/1"
PRECISIONS = ("fp32", "int8")
FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"}
MANIFEST = "manifest.json"
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "context_ids")
OUTPUTS = ("motive_logits", "tier_logits")
QUANT_RECIPE: dict[str, Any] = {"weight_type": "QInt8", "per_channel": True,
                                "op_types_to_quantize": ["MatMul", "Attention"], "ffn_output_fp32": True}
GELUS = ("Gelu", "BiasGelu", "FastGelu")
MASK_VALUE = -10000.0  # the additive mask of classic BERT: exp(-10000) is 0 in float32


class OnnxUnavailable(SharelensError):
    """onnxruntime or onnx is missing (install the `bench` extra)."""

    def __init__(self, why: str) -> None:
        super().__init__("E255", why)


def unavailable() -> str | None:
    """Why the ONNX Runtime peer cannot run here, in one line; None when it can."""
    import importlib

    for module in ("onnxruntime", "onnx"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not installed ({exc.__class__.__name__}); `pip install -e '.[bench]'` adds it"
    return None


def _require() -> None:
    why = unavailable()
    if why is not None:
        raise OnnxUnavailable(why)


# -- the exported network ------------------------------------------------------------------------
class ExportNetwork(nn.Module):
    """The bundle's network as one traced function: (input_ids, attention_mask[, context_ids])
    -> (motive_logits, tier_logits), what `ShareLensModel.forward` returns. It shares the
    weights of `model`; nothing is copied."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def lean(self) -> bool:
        from sharelens.lean_bert import LeanBertModel

        return isinstance(self.model.encoder, LeanBertModel)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`sharelens.lean_bert.LeanBertModel` in classic BERT form (the attention ORT fuses)."""
        enc = self.model.encoder
        emb = enc.embeddings
        n = input_ids.shape[1]
        x = emb.word_embeddings(input_ids) + emb.token_type_embeddings.weight[0] + emb.position_embeddings.weight[:n]
        x = emb.LayerNorm(x)
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_VALUE
        for layer in enc.encoder.layer:
            sa = layer.attention.self
            heads, dim = sa.heads, sa.head_dim

            def split(t: torch.Tensor, heads: int = heads, dim: int = dim) -> torch.Tensor:
                return t.view(t.size()[:-1] + (heads, dim)).permute(0, 2, 1, 3)

            q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / (dim ** 0.5) + additive, dim=-1)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            a = layer.attention.output(ctx.view(ctx.size()[:-2] + (heads * dim,)), x)
            x = layer.output(layer.intermediate(a), a)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                context_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lean:
            h = self._encode(input_ids, attention_mask)
            mask = attention_mask.unsqueeze(-1).to(h.dtype)  # ShareLensModel.pool's mean pooling
            pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        else:
            pooled = self.model.pool(input_ids, attention_mask)
        out = self.model.heads(pooled, context_ids)
        return out.motive_logits, out.tier_logits


def _example(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A padded batch of two, so the traced graph carries the attention mask."""
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    slots = getattr(model, "context_slots", 0)
    return (ids, mask) if not slots else (ids, mask, torch.zeros(2, slots, dtype=torch.long))


def export_fp32(model: nn.Module, path: Path) -> None:
    net = ExportNetwork(model).eval()
    args = _example(model)
    names = list(INPUTS[: len(args)])
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "context_ids": {0: "batch"}, "motive_logits": {0: "batch"}, "tier_logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer hints
        torch.onnx.export(net, args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=list(OUTPUTS), dynamic_axes={k: v for k, v in axes.items()
                                                                    if k in names or k in OUTPUTS},
                          do_constant_folding=True)


def fuse_bert(path: Path, model: nn.Module) -> dict[str, int]:
    """ONNX Runtime's BERT optimiser, in place; returns the fused operators it made."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    cfg = model.encoder.config
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    opt = optimize_model(str(path), model_type="bert", num_heads=cfg.num_attention_heads,
                         hidden_size=cfg.hidden_size, opt_level=0)
    opt.save_model_to_file(str(path))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def ffn_outputs(path: Path) -> list[str]:
    """Names of the MatMul nodes that read a GELU's output: the FFN output layers."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and producer.get(n.input[0]) in GELUS]


def quantize_int8(src: Path, dst: Path, recipe: dict[str, Any] | None = None) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = QUANT_RECIPE if recipe is None else recipe
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType[recipe["weight_type"]],
                         per_channel=recipe["per_channel"], op_types_to_quantize=list(recipe["op_types_to_quantize"]),
                         nodes_to_exclude=ffn_outputs(src) if recipe.get("ffn_output_fp32") else None,
                         # the fused com.microsoft operators have no ONNX shape inference: their outputs are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)


# -- the cache -----------------------------------------------------------------------------------
def _source_sha(info: BundleInfo) -> str:
    return info.meta.get("files", {}).get(WEIGHTS) or sha256_file(info.path / WEIGHTS)


def cache_folder(info: BundleInfo, cache_dir: Path | str | None = None) -> Path:
    """<bundle>/onnx, or <cache_dir>/<name>/<version> when given, or the same under the temp dir
    when the bundle folder is not writable."""
    import os

    if cache_dir is not None:
        return Path(cache_dir) / info.name / info.version
    if os.access(info.path, os.W_OK):
        return info.path / ONNX_DIR
    return Path(tempfile.gettempdir()) / "sharelens-onnx" / info.name / info.version


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def read_manifest(folder: Path, info: BundleInfo, recipe: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The cached export's manifest if it was made from this bundle's weights with this recipe
    and these library versions and its files are whole; None when it must be (re)built."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != ONNX_FORMAT:
        return None
    if (doc.get("source_weights_sha256") != _source_sha(info) or doc.get("versions") != _versions()
            or doc.get("quantization") != (QUANT_RECIPE if recipe is None else recipe)):
        return None
    for precision, name in FILES.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != doc.get("bytes", {}).get(precision):
            return None
    return doc


def export_onnx(info: BundleInfo, model: nn.Module, folder: Path, recipe: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Write both ONNX files and the manifest into `folder`, atomically (replacing an older one)."""
    _require()
    recipe = QUANT_RECIPE if recipe is None else recipe
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    t0 = time.perf_counter()
    fp32 = tmp / FILES["fp32"]
    export_fp32(model, fp32)
    fused = fuse_bert(fp32, model) if ExportNetwork(model).lean else {}
    t1 = time.perf_counter()
    quantize_int8(fp32, tmp / FILES["int8"], recipe)
    doc = {
        "format": ONNX_FORMAT,
        "bundle": {"name": info.name, "version": info.version},
        "source_weights_sha256": _source_sha(info),
        "exporter": f"torch.onnx.export(dynamo=False), opset {OPSET}",
        "fused_operators": fused,
        "quantization": recipe,
        "versions": _versions(),
        "bytes": {p: (tmp / f).stat().st_size for p, f in FILES.items()},
        "export_s": round(t1 - t0, 2),
        "quantize_s": round(time.perf_counter() - t1, 2),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(tmp / MANIFEST, doc)
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return doc


def ensure_export(info: BundleInfo, model: nn.Module, cache_dir: Path | str | None = None,
                  recipe: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of an up-to-date export of this bundle, made now if need be."""
    _require()
    folder = cache_folder(info, cache_dir)
    doc = read_manifest(folder, info, recipe)
    if doc is None:
        doc = export_onnx(info, model, folder, recipe)
    return folder, doc


# -- inference -----------------------------------------------------------------------------------
def make_session(path: Path, threads: int | None = None):
    """An InferenceSession on the CPU with the threads described in the module doc."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtNetwork:
    """What `Predictor.logits` calls as its `infer_model`: the session, fed the padded int64
    tensors Predictor builds, answering the same dict of logits as `ShareLensModel.forward`."""

    def __init__(self, session, context_slots: int) -> None:
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]
        self.context_slots = context_slots

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 context_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        if "context_ids" in self.inputs:
            if context_ids is None:  # unknown context, as ShareLensModel.heads does
                context_ids = torch.zeros(input_ids.shape[0], self.context_slots, dtype=torch.long)
            feed["context_ids"] = context_ids.cpu().numpy()
        motive, tier = self.session.run(list(OUTPUTS), feed)
        return {"motive_logits": torch.from_numpy(motive), "tier_logits": torch.from_numpy(tier)}

    def pool(self, *_: object, **__: object):
        raise NotImplementedError("the ONNX graph ends at the heads: use Predictor.logits, not pooled()")

    def heads(self, *_: object, **__: object):
        raise NotImplementedError("the ONNX graph ends at the heads: use Predictor.logits, not head_logits()")


class OnnxPredictor(Predictor):
    """sharelens' Predictor whose network runs in ONNX Runtime: `predict`, `logits`, `tokenize`,
    `context_ids` and `probabilities` (calibration temperatures) are Predictor's own. `model`
    stays the bundle's fp32 torch network (its context features, and what explanations would
    differentiate); `pooled` / `head_logits` are not available (the graph is one piece)."""

    def __init__(self, info: BundleInfo, model, tokenizer, session, precision: str, folder: Path,
                 manifest: dict[str, Any]) -> None:
        super().__init__(info, model, tokenizer, device="cpu", backend=precision,
                         infer_model=OrtNetwork(session, getattr(model, "context_slots", 0)))
        self.precision = precision
        self.folder = folder
        self.manifest = manifest
        self.session = session

    @property
    def runtime(self) -> str:
        return "onnxruntime"

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    @classmethod
    def from_bundle(cls, path: Path | str, precision: str = "fp32", threads: int | None = None,  # type: ignore[override]
                    check_hash: bool = True, cache_dir: Path | str | None = None,
                    recipe: dict[str, Any] | None = None) -> OnnxPredictor:
        """Load (exporting first if the cache is missing or stale) and open a session."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        _require()
        info = verify_bundle(Path(path), check_hash=check_hash)
        model, tokenizer = load_model(info, device="cpu", runtime="auto")
        folder, manifest = ensure_export(info, model, cache_dir, recipe)
        session = make_session(folder / FILES[precision], threads)
        return cls(info, model, tokenizer, session, precision, folder, manifest)
