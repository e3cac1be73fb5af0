"""A tiny random BERT with a Chinese character vocabulary: the `tiny` profile's base encoder and
the unit tests' model. Built from real texts so most characters of a post are in-vocabulary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from transformers import BertConfig, BertModel, BertTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_encoder(out_dir: Path, texts: list[str], vocab_chars: int = 400, hidden: int = 64,
                       layers: int = 2, seed: int = 0) -> Path:
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = Counter(c for t in texts for c in t if not c.isspace())
    chars = [c for c, _ in counts.most_common(vocab_chars)]
    (out_dir / "vocab.txt").write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    # transformers 5: `vocab=` (a path or dict); the old `vocab_file=` keyword is silently ignored.
    tokenizer = BertTokenizer(vocab=str(out_dir / "vocab.txt"), do_lower_case=False,
                              tokenize_chinese_chars=True, model_max_length=512)
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(vocab_size=len(SPECIALS) + len(chars), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=hidden * 2, max_position_embeddings=512)
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(out_dir)
    return out_dir
