"""Inference over a bundle: the one code path behind `make eval`, `make predict` and the API.

Texts are normalised exactly as at training time, tokenised once, run in length-sorted batches
padded to their own longest text, and turned into calibrated probabilities with the bundle's
fitted temperatures.

Backends: "fp32" runs the bundle's network as trained; "int8" runs the copy whose encoder Linear
layers are int8 (`sharelens.quantize`, exported by `make quantize`). Either way `model` is the
fp32 network, which explanations differentiate; `infer_model` is what `logits` runs.

Runtimes: the network and tokenizer are built either by transformers (as at training time) or
by `sharelens.lean_bert` / `sharelens.lean_tokenizer` (the same function in plain torch and
`tokenizers`, seconds faster to import); "auto" takes the lean one for plain BERT bundles.

Threads are the process's business (torch.set_num_threads is process-wide): the server sets
them from SHARELENS_TORCH_THREADS, the benchmarks from --threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sharelens.bundle import BundleInfo, load_model, verify_bundle
from sharelens.errors import SharelensError
from sharelens.labels import MOTIVES, TIERS
from sharelens.modeling import median_tier, tier_probs_from_logits
from sharelens.post import Post
from sharelens.quantize import check_backend
from sharelens.text import Normalised, normalise


@dataclass
class Prediction:
    motive_probs: np.ndarray  # (10,)
    tier_probs: np.ndarray  # (4,)
    n_tokens: int
    truncated: bool
    normalised: Normalised = field(repr=False)
    post: Post = field(default_factory=lambda: Post(""), repr=False)
    context_used: tuple[str, ...] = ()  # the post's context fields the tier head read
    context_unknown: tuple[str, ...] = ()  # the ones it did not have (or could not use)
    context_notes: tuple[str, ...] = ()  # why a field given was not (fully) used

    @property
    def motive(self) -> str:
        return MOTIVES[int(self.motive_probs.argmax())]

    @property
    def tier(self) -> str:
        return TIERS[int(median_tier(self.tier_probs))]


@dataclass
class RawOutputs:
    motive_logits: np.ndarray
    tier_logits: np.ndarray


class Predictor:
    def __init__(self, info: BundleInfo, model, tokenizer, device: str = "cpu", backend: str = "fp32",
                 infer_model=None) -> None:
        self.info = info
        self.model = model  # fp32, differentiable: explanations use it
        self.infer_model = infer_model if infer_model is not None else model
        self.backend = check_backend(backend)
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = info.max_length
        # the tier head's context encoder (None: a text-only bundle, every field is unknown)
        self.features = getattr(model, "context_features", None)
        self.motive_temperature = float(info.calibration.get("motive_temperature", 1.0))
        self.tier_temperature = float(info.calibration.get("tier_temperature", 1.0))
        self._layout: tuple[list[int], list[int]] | None = None

    @classmethod
    def from_bundle(cls, path: Path | str, device: str = "cpu", check_hash: bool = True,
                    backend: str = "fp32", runtime: str = "auto", threads: int | None = None) -> Predictor:
        """runtime: how the network is built (`sharelens.bundle.load_model`): "auto" runs plain
        BERT bundles on the lean runtime (no transformers import), "transformers" as trained,
        "onnxruntime" the bundle exported to ONNX and run by ONNX Runtime at the backend's precision
        (sharelens.onnx_runtime; exported once into the bundle's onnx/ folder), on `threads`
        intra-op threads (None: torch's count)."""
        check_backend(backend)
        if runtime == "onnxruntime":
            from sharelens.onnx_runtime import OnnxPredictor

            if device != "cpu":
                raise SharelensError("E254", f"the onnxruntime runtime runs on the CPU here, not {device!r}")
            return OnnxPredictor.from_bundle(path, precision=backend, threads=threads, check_hash=check_hash)
        info = verify_bundle(Path(path), check_hash=check_hash)
        if backend == "int8":
            from sharelens.quantize import load_int8, verify_int8

            if device != "cpu":
                raise SharelensError("E253", f"the int8 backend runs on the CPU only, not {device!r}; "
                                     "use backend fp32 on an accelerator")
            manifest = verify_int8(info, check_hash=check_hash)  # refuse before loading anything heavy
            model, tokenizer = load_model(info, device=device, runtime=runtime)
            return cls(info, model, tokenizer, device=device, backend=backend,
                       infer_model=load_int8(info, model, manifest))
        model, tokenizer = load_model(info, device=device, runtime=runtime)
        return cls(info, model, tokenizer, device=device, backend=backend)

    @property
    def runtime(self) -> str:
        return str(getattr(self.model, "runtime", "transformers"))

    @property
    def version(self) -> str:
        return self.info.version

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The reference encoding (what `logits` computes in one pass): truncated, padded."""
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def _special_layout(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after one text ([CLS] .. [SEP], <s> .. </s>)."""
        if self._layout is None:
            probe = "a"
            inner = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            full = self.tokenizer(probe)["input_ids"]
            for i in range(len(full) - len(inner) + 1):
                if full[i:i + len(inner)] == inner:
                    self._layout = (list(full[:i]), list(full[i + len(inner):]))
                    break
            else:  # pragma: no cover - no tokenizer we load does this
                raise RuntimeError("cannot find where the tokenizer puts a text between its special tokens")
        return self._layout

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """One tokenizer pass: input ids truncated to the window, and each text's full token count
        (special tokens included), so truncation is reported exactly without tokenising twice."""
        prefix, suffix = self._special_layout()
        budget = max(0, self.max_length - len(prefix) - len(suffix))
        left = getattr(self.tokenizer, "truncation_side", "right") == "left"
        inner = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        counts = [len(ids) + len(prefix) + len(suffix) for ids in inner]
        ids = [prefix + (list(x[-budget:]) if left and budget else list(x[:budget])) + suffix for x in inner]
        return ids, counts

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((len(seqs), width), pad, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, x in enumerate(seqs):
            sl = slice(width - len(x), width) if left else slice(0, len(x))
            ids[row, sl] = x
            mask[row, sl] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def context_ids(self, posts: Sequence[Post], observed_ages: Sequence[float | None] | None = None
                    ) -> np.ndarray | None:
        """(n, slots) context categories for the tier head; None for a text-only bundle.
        `observed_ages` (days from posting to the counts' snapshot) only in evaluation."""
        if self.features is None:
            return None
        ages = observed_ages if observed_ages is not None else [None] * len(posts)
        return np.array([self.features.encode(p.context, a) for p, a in zip(posts, ages, strict=True)],
                        dtype=np.int64).reshape(len(posts), -1)

    @staticmethod
    def _batch_starts(n: int, batch_size: int, progress: str | None):
        """Where each batch starts; with a tqdm bar named `progress` for long offline jobs (the
        server never asks for one)."""
        starts = range(0, n, batch_size)
        if progress is None:
            return starts
        from tqdm.auto import tqdm

        return tqdm(starts, desc=progress, unit="batch", leave=False, dynamic_ncols=True)

    @torch.inference_mode()
    def logits(self, texts: list[str], batch_size: int = 32, context_ids: np.ndarray | None = None,
               progress: str | None = None) -> tuple[RawOutputs, list[int]]:
        """Uncalibrated logits for already-normalised texts (and their context categories, from
        `context_ids`), in input order, and token counts. `progress`: a progress bar's name."""
        m_out = np.zeros((len(texts), len(MOTIVES)), dtype=np.float32)
        t_out = np.zeros((len(texts), len(TIERS) - 1), dtype=np.float32)
        if not texts:
            return RawOutputs(m_out, t_out), []
        seqs, counts = self.tokenize(texts)
        # Longest first, so each batch is padded only to its own longest text.
        order = np.argsort([-len(x) for x in seqs], kind="stable")
        for start in self._batch_starts(len(texts), batch_size, progress):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = self._pad([seqs[i] for i in idx])
            ctx = None if context_ids is None else torch.from_numpy(context_ids[idx]).to(self.device)
            out = self.infer_model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                   context_ids=ctx)
            m_out[idx] = out["motive_logits"].float().cpu().numpy()
            t_out[idx] = out["tier_logits"].float().cpu().numpy()
        return RawOutputs(m_out, t_out), counts

    @torch.inference_mode()
    def pooled(self, texts: list[str], batch_size: int = 32, progress: str | None = None) -> np.ndarray:
        """The encoder's pooled vectors for already-normalised texts, in input order: what every
        head reads. Evaluation runs the heads on them under many contexts without re-encoding."""
        seqs, _ = self.tokenize(texts) if texts else ([], [])
        out = np.zeros((len(texts), self.model.encoder.config.hidden_size), dtype=np.float32)
        order = np.argsort([-len(x) for x in seqs], kind="stable")
        for start in self._batch_starts(len(texts), batch_size, progress):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = self._pad([seqs[i] for i in idx])
            out[idx] = self.infer_model.pool(input_ids.to(self.device), attention_mask.to(self.device)).float().cpu().numpy()
        return out

    @torch.inference_mode()
    def head_logits(self, pooled: np.ndarray, context_ids: np.ndarray | None = None) -> RawOutputs:
        """Both heads on pooled vectors (from `pooled`), with the given context categories."""
        z = torch.from_numpy(pooled).to(self.device)
        ctx = None if context_ids is None else torch.from_numpy(context_ids).to(self.device)
        out = self.infer_model.heads(z, ctx)
        return RawOutputs(out.motive_logits.float().cpu().numpy(), out.tier_logits.float().cpu().numpy())

    def probabilities(self, raw: RawOutputs) -> tuple[np.ndarray, np.ndarray]:
        m = torch.softmax(torch.from_numpy(raw.motive_logits) / self.motive_temperature, dim=-1)
        t = tier_probs_from_logits(torch.from_numpy(raw.tier_logits), self.tier_temperature)
        return m.numpy(), t.numpy()

    def context_usage(self, post: Post) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(used, unknown, notes) for one post's context under this bundle."""
        if self.features is None:
            given = post.context.known()
            notes = ("this model reads text only; context was ignored",) if given else ()
            return (), tuple(type(post.context).field_names()), notes
        used, unknown, notes = self.features.usage(post.context)
        return tuple(used), tuple(unknown), tuple(notes)

    def predict(self, posts: Sequence[Post | str], batch_size: int = 32) -> list[Prediction]:
        """Posts (a bare string is a post with unknown context) -> calibrated predictions."""
        items = [Post.of(p) for p in posts]
        norms = [normalise(p.text) for p in items]
        raw, counts = self.logits([n.text for n in norms], batch_size=batch_size,
                                  context_ids=self.context_ids(items))
        mp, tp = self.probabilities(raw)
        out = []
        for i, post in enumerate(items):
            used, unknown, notes = self.context_usage(post)
            out.append(Prediction(motive_probs=mp[i], tier_probs=tp[i], n_tokens=counts[i],
                                  truncated=counts[i] > self.max_length, normalised=norms[i], post=post,
                                  context_used=used, context_unknown=unknown, context_notes=notes))
        return out
