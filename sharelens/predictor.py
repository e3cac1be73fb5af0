"""Inference over a bundle: the one code path behind `make eval`, `make predict` and the API.

Texts are normalised exactly as at training time, tokenised, run in length-sorted batches, and
turned into calibrated probabilities with the bundle's fitted temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sharelens.bundle import BundleInfo, load_model, verify_bundle
from sharelens.labels import MOTIVES, TIERS
from sharelens.modeling import tier_probs_from_logits
from sharelens.text import Normalised, normalise


@dataclass
class Prediction:
    motive_probs: np.ndarray  # (10,)
    tier_probs: np.ndarray  # (4,)
    n_tokens: int
    truncated: bool
    normalised: Normalised = field(repr=False)

    @property
    def motive(self) -> str:
        return MOTIVES[int(self.motive_probs.argmax())]

    @property
    def tier(self) -> str:
        return TIERS[int(self.tier_probs.argmax())]


@dataclass
class RawOutputs:
    motive_logits: np.ndarray
    tier_logits: np.ndarray


class Predictor:
    def __init__(self, info: BundleInfo, model, tokenizer, device: str = "cpu") -> None:
        self.info = info
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = info.max_length
        self.motive_temperature = float(info.calibration.get("motive_temperature", 1.0))
        self.tier_temperature = float(info.calibration.get("tier_temperature", 1.0))

    @classmethod
    def from_bundle(cls, path: Path | str, device: str = "cpu", check_hash: bool = True) -> Predictor:
        info = verify_bundle(Path(path), check_hash=check_hash)
        model, tokenizer = load_model(info, device=device)
        return cls(info, model, tokenizer, device=device)

    @property
    def version(self) -> str:
        return self.info.version

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    @torch.inference_mode()
    def logits(self, texts: list[str], batch_size: int = 32) -> tuple[RawOutputs, list[int]]:
        """Uncalibrated logits for already-normalised texts, in input order, and token counts."""
        counts = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        order = np.argsort([-c for c in counts], kind="stable")
        m_out = np.zeros((len(texts), len(MOTIVES)), dtype=np.float32)
        t_out = np.zeros((len(texts), len(TIERS) - 1), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.encode([texts[i] for i in idx])
            out = self.model(input_ids=enc["input_ids"].to(self.device),
                             attention_mask=enc["attention_mask"].to(self.device))
            m_out[idx] = out["motive_logits"].float().cpu().numpy()
            t_out[idx] = out["tier_logits"].float().cpu().numpy()
        return RawOutputs(m_out, t_out), counts

    def probabilities(self, raw: RawOutputs) -> tuple[np.ndarray, np.ndarray]:
        m = torch.softmax(torch.from_numpy(raw.motive_logits) / self.motive_temperature, dim=-1)
        t = tier_probs_from_logits(torch.from_numpy(raw.tier_logits), self.tier_temperature)
        return m.numpy(), t.numpy()

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        norms = [normalise(t) for t in texts]
        raw, counts = self.logits([n.text for n in norms], batch_size=batch_size)
        mp, tp = self.probabilities(raw)
        return [
            Prediction(motive_probs=mp[i], tier_probs=tp[i], n_tokens=counts[i],
                       truncated=counts[i] > self.max_length, normalised=norms[i])
            for i in range(len(texts))
        ]
