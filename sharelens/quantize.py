"""The int8 inference path: torch's dynamic quantisation of the encoder's Linear layers, exported
beside the bundle's weights and loaded by `Predictor.from_bundle(path, backend="int8")`.

    models/<name>/<version>/int8/
      model.int8.safetensors   int8 weights, per-output-channel scales and zero points, biases
                               of every quantised Linear (nothing else: no pickle)
      manifest.json            format, scheme, sha256 of that file and of the fp32 weights it
                               was made from, torch version
      accuracy.json            fp32 vs int8 on the held-out test split (`make quantize`)

What is quantised: the Linear layers of the encoder (Q/K/V, attention output, FFN in and out),
weights to int8 per output channel (torch's `per_channel_dynamic_qconfig`), activations to
8 bits per tensor at run time. What is not: embeddings, LayerNorms, the two small heads (10 and
1 outputs: nothing to gain, and they hold the calibrated logits). Those, and the network used
for explanations (Integrated Gradients needs gradients, which quantised kernels do not have),
come from the bundle's fp32 weights, so the int8 artefact only stores what int8 changes.

Outliers: a few hidden channels carry activations tens of times larger than the rest (after the
FFN's GELU above all), and a per-tensor activation scale sized for them crushes every other
channel. SmoothQuant (Xiao et al., ICML 2023) moves that difficulty into the weights, which are
quantised per channel anyway: x W^T = (x / s)(W s)^T with s_j = max|x_j|^a / max|W_.j|^(1-a),
the activation maxima measured on training posts at export time. The export stores 1/s per
layer and the int8 Linear multiplies its input by it: the same function, far easier to quantise
(top-motive agreement with fp32 on the fast model: 95.2% without, 98.5% with a = 0.8).

Activations: torch's module hard-codes `reduce_range=True` (7-bit activations), a guard for
x86 CPUs without VNNI, where the u8 x s8 multiply-add saturates 16-bit sums. On this workload
that costs accuracy (top-motive agreement with fp32 92% with 7 bits, 95% with 8 bits on the fast
model), so the full 8 bits are used where a probe shows the kernel does not saturate.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharelens.bundle import WEIGHTS, BundleInfo, sha256_file, write_json
from sharelens.errors import SharelensError

BACKENDS = ("fp32", "int8")
INT8_DIR = "int8"
INT8_WEIGHTS = "model.int8.safetensors"
MANIFEST = "manifest.json"
ACCURACY = "accuracy.json"
INT8_FORMAT = "sharelens-int8/1"
DEFAULT_ALPHA = 0.8  # SmoothQuant migration strength: best agreement of 0.5 .. 0.9 on the fast model
SCHEME = ("torch.ao dynamic quantisation: Linear weights qint8 per output channel (affine), "
          "activations uint8 per tensor at run time; embeddings, LayerNorms and heads fp32")


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """torch 2.13 deprecates torch.ao.quantization and quantized tensor creation in favour of
    torchao; the eager API still works and is what we use, so its warnings are silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        yield


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SharelensError("E240", f"unknown inference backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers that int8 replaces: every Linear of the encoder."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("encoder.")]


# -- the kernel ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def full_range_activations() -> bool:
    """Whether the dynamic int8 kernel of this CPU is exact with 8-bit activations.

    The worst case for a 16-bit multiply-add (VPMADDUBSW, x86 without VNNI) is activations at
    255 against weights at -127: the pairwise sums saturate and the result is off by about half.
    Run exactly that and compare with the exact answer; VNNI (int32 sums) and ARM pass."""
    with quiet_quantization():
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        n = 64
        w = torch.full((4, n), -1.0)
        lin = DynamicLinear(n, 4, dtype=torch.qint8)
        scales = torch.full((4,), 1.0 / 127, dtype=torch.float64)
        qw = torch.quantize_per_channel(w, scales, torch.zeros(4, dtype=torch.int64), 0, torch.qint8)
        lin.set_weight_bias(qw, None)
        x = torch.full((1, n), 2.0)
        x[0, 0] = 0.0  # keeps the activation range [0, 2]: 2.0 quantises to 255
        with torch.inference_mode():
            y = torch.ops.quantized.linear_dynamic(x, lin._packed_params._packed_params, reduce_range=False)
    exact = -2.0 * (n - 1)
    return bool(torch.allclose(y, torch.full_like(y, exact), rtol=0.02))


def _int8_linear_class():
    with quiet_quantization():
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class Int8Linear(DynamicLinear):
        """torch's dynamic int8 Linear with a choice of activation range (see the module doc)."""

        def __init__(self, in_features: int, out_features: int, reduce_range: bool,
                     input_scale: torch.Tensor | None = None) -> None:
            super().__init__(in_features, out_features, dtype=torch.qint8)
            self.reduce_range = reduce_range
            self.input_scale = input_scale  # SmoothQuant's 1/s, or None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.input_scale is not None:
                x = x * self.input_scale
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                      reduce_range=self.reduce_range)

        def extra_repr(self) -> str:
            return (super().extra_repr() + f", reduce_range={self.reduce_range}"
                    + (", smoothed" if self.input_scale is not None else ""))

    return Int8Linear


# -- export --------------------------------------------------------------------------------------
def activation_maxima(model: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """max |x_j| per input channel of every quantisable Linear while `run()` drives `model`
    (calibration: run it on training posts one at a time, so no padding token is counted)."""
    names = quantizable_linears(model)
    maxima: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            maxima[name] = torch.maximum(maxima[name], x) if name in maxima else x
        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in maxima]
    if missing:
        raise SharelensError("E245", f"calibration never reached {missing[0]}; give it at least one text")
    return maxima


def smoothing_scales(weight: torch.Tensor, act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s_j = max|x_j|^a / max|W_.j|^(1-a), one per input channel."""
    w_max = weight.detach().abs().amax(0).float().clamp_min(1e-5)
    s = act_max.float().clamp_min(1e-5).pow(alpha) / w_max.pow(1 - alpha)
    return s.clamp(1e-3, 1e3)


def quantize_linears(model: nn.Module, act_max: dict[str, torch.Tensor] | None = None,
                     alpha: float = DEFAULT_ALPHA) -> dict[str, torch.Tensor]:
    """Quantise the encoder's Linear layers with torch's `quantize_dynamic` (per-channel qint8)
    and return what the artefact stores for each: int8 weight, scales, zero points, bias, and,
    with activation maxima from calibration, the SmoothQuant input scale 1/s."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = quantizable_linears(model)
    if not names:
        raise SharelensError("E246", "this model has no encoder Linear layers to quantise")
    with quiet_quantization(), torch.no_grad():
        modules = dict(model.named_modules())
        tensors: dict[str, torch.Tensor] = {}
        for name in names:
            lin = modules[name]
            if act_max is not None:
                s = smoothing_scales(lin.weight, act_max[name], alpha)
                smoothed = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
                smoothed.weight.copy_(lin.weight * s)
                if lin.bias is not None:
                    smoothed.bias.copy_(lin.bias)
                lin = smoothed
                tensors[f"{name}.input_scale"] = (1.0 / s).float().contiguous()
            # One layer at a time, so the embeddings are never copied (quantize_dynamic deep-copies).
            q = quantize_dynamic(nn.Sequential(lin), {"0": per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]
            w = q.weight()
            if w.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric) or w.q_per_channel_axis() != 0:
                raise SharelensError("E247", f"unexpected quantisation of {name}: {w.qscheme()}")
            tensors[f"{name}.weight_int8"] = w.int_repr().contiguous()
            tensors[f"{name}.weight_scales"] = w.q_per_channel_scales().to(torch.float64).contiguous()
            tensors[f"{name}.weight_zero_points"] = w.q_per_channel_zero_points().to(torch.int64).contiguous()
            bias = q.bias()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().float().contiguous()
    return tensors


def export_int8(info: BundleInfo, model: nn.Module, act_max: dict[str, torch.Tensor] | None = None,
                alpha: float = DEFAULT_ALPHA, calibration: dict[str, Any] | None = None) -> Path:
    """Write <bundle>/int8/ from the bundle's fp32 model, atomically (replacing an older one).
    `act_max` (from `activation_maxima`) turns SmoothQuant on; `calibration` describes its data."""
    from safetensors.torch import save_file

    source = info.meta.get("files", {}).get(WEIGHTS) or sha256_file(info.path / WEIGHTS)
    tensors = quantize_linears(model, act_max, alpha)
    dest = info.path / INT8_DIR
    tmp = info.path / f".{INT8_DIR}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(tensors, str(tmp / INT8_WEIGHTS), metadata={"format": INT8_FORMAT})
    layers = sorted({k.rsplit(".", 1)[0] for k in tensors})
    write_json(tmp / MANIFEST, {
        "format": INT8_FORMAT,
        "scheme": SCHEME,
        "bundle": {"name": info.name, "version": info.version},
        "source_weights_sha256": source,
        "files": {INT8_WEIGHTS: sha256_file(tmp / INT8_WEIGHTS)},
        "bytes": (tmp / INT8_WEIGHTS).stat().st_size,
        "quantized_linears": layers,
        "smoothing": None if act_max is None else {"method": "SmoothQuant", "alpha": alpha, **(calibration or {})},
        "torch": torch.__version__,
        "engine": torch.backends.quantized.engine,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    old = info.path / f".{INT8_DIR}.old"
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():  # its accuracy report described the previous export: `make quantize` writes a new one
        shutil.rmtree(old)
    return dest


# -- load ----------------------------------------------------------------------------------------
def _quantize_hint(info: BundleInfo) -> str:
    return f"run `make quantize MODEL={info.name} VERSION={info.version}`"


def verify_int8(info: BundleInfo, check_hash: bool = True) -> dict[str, Any]:
    """Check <bundle>/int8/ before loading it; E24x with what to do otherwise."""
    folder = info.path / INT8_DIR
    manifest_path, weights = folder / MANIFEST, folder / INT8_WEIGHTS
    if not manifest_path.is_file() or not weights.is_file():
        missing = MANIFEST if not manifest_path.is_file() else INT8_WEIGHTS
        raise SharelensError("E241", f"bundle {info.path} has no int8 export ({INT8_DIR}/{missing} missing); "
                             f"{_quantize_hint(info)}, or serve the fp32 backend")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SharelensError("E248", f"{manifest_path} is unreadable; {_quantize_hint(info)} again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != INT8_FORMAT:
        raise SharelensError("E248", f"{manifest_path} has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                             f"this sharelens reads {INT8_FORMAT}; {_quantize_hint(info)} again")
    source = info.meta.get("files", {}).get(WEIGHTS)
    if source and manifest.get("source_weights_sha256") != source:
        raise SharelensError("E243", f"the int8 export of {info.path} was made from other weights than the bundle's "
                             f"{WEIGHTS}; {_quantize_hint(info)} again")
    if check_hash and sha256_file(weights) != manifest.get("files", {}).get(INT8_WEIGHTS):
        raise SharelensError("E242", f"{weights} does not match the checksum in its manifest (corrupt or altered); "
                             f"{_quantize_hint(info)} again")
    return manifest


def build_int8_model(model: nn.Module, tensors: dict[str, torch.Tensor], reduce_range: bool | None = None) -> nn.Module:
    """A copy of the fp32 `model` whose encoder Linear layers are int8. Every other tensor is
    shared with `model`, not copied: the int8 path costs only its int8 weights in memory."""
    import copy

    if reduce_range is None:
        reduce_range = not full_range_activations()
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    expected = quantizable_linears(model)
    if sorted(expected) != names:
        raise SharelensError("E244", f"the int8 export does not match this network ({len(names)} quantised layers, "
                             f"{len(expected)} expected)")
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    qmodel = copy.deepcopy(model, memo)
    int8_linear = _int8_linear_class()
    with quiet_quantization():
        for name in names:
            fp = qmodel.get_submodule(name)
            w = tensors[f"{name}.weight_int8"]
            if tuple(w.shape) != (fp.out_features, fp.in_features):
                raise SharelensError("E244", f"the int8 export's {name} has shape {tuple(w.shape)}, the network "
                                     f"{(fp.out_features, fp.in_features)}")
            qw = torch._make_per_channel_quantized_tensor(w, tensors[f"{name}.weight_scales"],
                                                          tensors[f"{name}.weight_zero_points"], 0)
            scale = tensors.get(f"{name}.input_scale")
            if scale is not None and tuple(scale.shape) != (fp.in_features,):
                raise SharelensError("E244", f"the int8 export's {name} input scale has shape {tuple(scale.shape)}")
            lin = int8_linear(fp.in_features, fp.out_features, reduce_range=reduce_range,
                              input_scale=None if scale is None else scale.float())
            lin.set_weight_bias(qw, tensors.get(f"{name}.bias"))
            parent, _, child = name.rpartition(".")
            setattr(qmodel.get_submodule(parent), child, lin)
    return qmodel.eval()


def load_int8(info: BundleInfo, model: nn.Module, manifest: dict[str, Any] | None = None,
              check_hash: bool = True) -> nn.Module:
    """The int8 network of a bundle, from its verified int8 export and its loaded fp32 `model`."""
    from safetensors.torch import load_file

    if manifest is None:
        manifest = verify_int8(info, check_hash=check_hash)
    try:
        tensors = load_file(str(info.path / INT8_DIR / INT8_WEIGHTS))
        return build_int8_model(model, tensors)
    except SharelensError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable export
        raise SharelensError("E249", f"the int8 export of {info.path} could not be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); {_quantize_hint(info)} again") from exc
