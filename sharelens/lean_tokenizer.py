"""A bundle's tokenizer through the `tokenizers` library alone: the serving runtime's tokenizer.

Why: `transformers.AutoTokenizer` costs about 1.2 s of imports at every cold start, for what is
`tokenizers.Tokenizer.from_file("tokenizer.json")` plus the settings in tokenizer_config.json.
The bundle's tokenizer.json is the complete pipeline (normaliser, pre-tokeniser, model, special
tokens around a text), saved by transformers at training time, so loading it here gives the same
ids, offsets and special-token masks; that is tested against AutoTokenizer on real posts.

It answers the calls sharelens makes (a text or a list, truncation to max_length, padding to
the longest, offsets, special-token masks, "pt" tensors), with transformers' argument names, and
refuses the rest with a TypeError rather than silently ignoring them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

_ACCEPTED = {"add_special_tokens", "truncation", "max_length", "padding", "return_offsets_mapping",
             "return_special_tokens_mask", "return_tensors", "verbose", "return_attention_mask"}


class FastTokenizer:
    def __init__(self, tokenizer: Tokenizer, config: dict[str, Any]) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        # Truncation is state of a `tokenizers.Tokenizer`, and a server tokenises from several
        # threads at once: one backend object per truncation length, never reconfigured.
        self._by_limit: dict[int | None, Tokenizer] = {None: tokenizer}
        self.model_max_length = int(config.get("model_max_length") or 512)
        self.truncation_side = config.get("truncation_side", "right")
        self.padding_side = config.get("padding_side", "right")
        self.pad_token = config.get("pad_token")
        self.pad_token_id = self._tok.token_to_id(self.pad_token) if isinstance(self.pad_token, str) else None

    @classmethod
    def from_folder(cls, folder: Path) -> FastTokenizer:
        folder = Path(folder)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), config)

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self._tok.id_to_token(i) for i in ids]

    def _backend(self, max_length: int | None) -> Tokenizer:
        tok = self._by_limit.get(max_length)
        if tok is None:
            tok = Tokenizer.from_str(self._tok.to_str())
            tok.enable_truncation(max_length=max_length, direction=self.truncation_side)
            self._by_limit[max_length] = tok  # a racing thread may build its own: equal, harmless
        return tok

    def __call__(self, text: str | list[str], **kwargs: Any) -> dict[str, Any]:
        unknown = set(kwargs) - _ACCEPTED
        if unknown:
            raise TypeError(f"FastTokenizer does not take {sorted(unknown)}")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        truncation = kwargs.get("truncation", False)
        max_length = kwargs.get("max_length") if truncation else None
        if truncation and max_length is None:
            max_length = self.model_max_length
        encodings = self._backend(max_length).encode_batch(texts, add_special_tokens=kwargs.get("add_special_tokens", True))
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings],
                               "attention_mask": [e.attention_mask for e in encodings]}
        if kwargs.get("return_offsets_mapping"):
            out["offset_mapping"] = [e.offsets for e in encodings]
        if kwargs.get("return_special_tokens_mask"):
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if kwargs.get("padding") in (True, "longest"):
            out = self._pad(out)
        elif kwargs.get("padding") not in (None, False, "do_not_pad"):
            raise TypeError(f"FastTokenizer pads to the longest text only, not {kwargs['padding']!r}")
        if kwargs.get("return_tensors") == "pt":
            import torch

            if len({len(x) for x in out["input_ids"]}) > 1:
                raise ValueError("texts of different lengths need padding=True for tensors")
            return {k: torch.tensor(v) for k, v in out.items()}
        if kwargs.get("return_tensors") is not None:
            raise TypeError(f"FastTokenizer returns lists or 'pt' tensors, not {kwargs['return_tensors']!r}")
        return {k: v[0] for k, v in out.items()} if single else out

    def _pad(self, out: dict[str, list]) -> dict[str, list]:
        width = max(len(x) for x in out["input_ids"])
        fill = {"input_ids": self.pad_token_id or 0, "attention_mask": 0, "offset_mapping": (0, 0),
                "special_tokens_mask": 1}
        left = self.padding_side == "left"
        return {k: [([fill[k]] * (width - len(x)) + list(x)) if left else (list(x) + [fill[k]] * (width - len(x)))
                    for x in rows] for k, rows in out.items()}
