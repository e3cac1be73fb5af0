"""Trim a SentencePiece-unigram encoder's vocabulary to the pieces Chinese posts need.

multilingual-e5-small's 250k-piece embedding matrix is ~82% of its parameters, yet the whole
corpus uses ~16k pieces. Keeping the pieces the corpus uses (so every corpus text tokenises to
the same pieces: the unigram Viterbi path over a subset that still holds the best path is that
path), plus every piece of at most `short_piece_chars` characters and every CJK piece (so unseen
Chinese text still segments sensibly), cuts the model's memory and load time. Kept pieces keep
their relative order, so the special tokens <s> <pad> </s> <unk> stay at ids 0-3.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

_CJK = re.compile(r"^▁?[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]+$")


def kept_piece_ids(tokenizer_json: dict, corpus_texts: list[str], tokenizer, short_piece_chars: int = 1,
                   keep_cjk: bool = True) -> list[int]:
    vocab = tokenizer_json["model"]["vocab"]
    keep: set[int] = {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    keep.add(int(tokenizer_json["model"]["unk_id"]))
    for enc in tokenizer.encode_batch(corpus_texts):
        keep.update(enc.ids)
    for i, (piece, _score) in enumerate(vocab):
        bare = piece[1:] if piece.startswith("▁") else piece
        if len(bare) <= short_piece_chars or (keep_cjk and _CJK.match(piece)):
            keep.add(i)
    return sorted(keep)


def trim(src: Path, dst: Path, corpus_texts: list[str], short_piece_chars: int = 1, keep_cjk: bool = True,
         dtype: str = "float32") -> dict:
    """Write a trimmed copy of the encoder folder `src` to `dst`; return a summary."""
    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    from sharelens.errors import SharelensError

    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    if tj["model"]["type"] != "Unigram":
        raise SharelensError("E230", f"vocabulary trimming supports unigram tokenizers, {src} has {tj['model']['type']}")
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    kept = kept_piece_ids(tj, corpus_texts, tok, short_piece_chars, keep_cjk)
    new_id = {old: new for new, old in enumerate(kept)}

    tj["model"]["vocab"] = [tj["model"]["vocab"][i] for i in kept]
    tj["model"]["unk_id"] = new_id[int(tj["model"]["unk_id"])]
    for t in tj.get("added_tokens", []):
        t["id"] = new_id[t["id"]]
    _remap_post_processor(tj.get("post_processor"), new_id)

    state = load_file(str(src / "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    index = torch.tensor(kept, dtype=torch.long)
    state[key] = state[key].index_select(0, index).contiguous()
    if dtype != "float32":
        state = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in state.items()}

    tmp = dst.with_name(f".{dst.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "tokenizer.json", "manifest.json", "config.json") and f.is_file():
            shutil.copy2(f, tmp / f.name)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    original_vocab = config["vocab_size"]
    config["vocab_size"] = len(kept)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (tmp / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    summary = {
        "trimmed_from": str(src), "original_vocab_rows": original_vocab, "kept_pieces": len(kept),
        "short_piece_chars": short_piece_chars, "keep_cjk": keep_cjk, "corpus_texts": len(corpus_texts),
        "dtype": dtype, "parameter_count": int(sum(v.numel() for v in state.values())),
    }
    base_manifest = src / "manifest.json"
    if base_manifest.exists():
        summary["base_manifest"] = json.loads(base_manifest.read_text(encoding="utf-8"))
    (tmp / "kept_piece_ids.json").write_text(json.dumps(kept), encoding="utf-8")
    (tmp / "manifest.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return summary


def _remap_post_processor(pp: dict | None, new_id: dict[int, int]) -> None:
    if not pp:
        return
    if pp.get("type") == "Sequence":
        for p in pp.get("processors", []):
            _remap_post_processor(p, new_id)
        return
    for name in ("cls", "sep"):
        if isinstance(pp.get(name), list) and len(pp[name]) == 2:
            pp[name][1] = new_id[pp[name][1]]
    for spec in (pp.get("special_tokens") or {}).values():
        spec["ids"] = [new_id[i] for i in spec["ids"]]


def corpus_texts(jsonl_dir: Path) -> list[str]:
    texts: list[str] = []
    for p in sorted(jsonl_dir.glob("*.jsonl")):
        with p.open(encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts


def main(argv: list[str] | None = None) -> int:
    from sharelens.errors import SharelensError
    from sharelens.paths import BASE_ENCODER_DIR, BASE_ENCODER_ZH_DIR, JSONL_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(BASE_ENCODER_DIR))
    p.add_argument("--dst", default=str(BASE_ENCODER_ZH_DIR))
    p.add_argument("--corpus", default=str(JSONL_DIR), help="folder of corpus JSONL files")
    p.add_argument("--short-piece-chars", type=int, default=1)
    p.add_argument("--corpus-only", action="store_true", help="keep only the pieces the corpus uses")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = p.parse_args(argv)
    try:
        texts = corpus_texts(Path(a.corpus))
        if not texts:
            raise SharelensError("E231", f"no corpus JSONL in {a.corpus}; run `make data` first")
        s = trim(Path(a.src), Path(a.dst), texts, short_piece_chars=0 if a.corpus_only else a.short_piece_chars,
                 keep_cjk=not a.corpus_only, dtype=a.dtype)
    except SharelensError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{a.dst}: kept {s['kept_pieces']:,} of {s['original_vocab_rows']:,} pieces, "
          f"{s['parameter_count']:,} parameters ({s['dtype']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
