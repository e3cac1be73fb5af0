"""Score a whole archive of posts locally: `sharelens score IN -o OUT`.

Input: CSV, JSONL or Parquet (by extension) with a text column, optional context columns named
like the `Context` fields (channel, vip, verified, followers, posted_at, author_history as a JSON
object or a JSON string; `context_columns` maps a field to another column name) and an optional
row id column (default: the 0-based row number).

Output: Parquet, CSV or JSONL (by extension) with one row per scored post: `id`, `motive_<id>` for
every motive, `motive` (the top one), `tier_<name>` for the four tiers, `tier` (the decision),
`model_version` and `context_used` (the context fields the tier head read, comma-separated).

Rows are scored in chunks; each finished chunk is a part file in `OUT.parts/` beside a manifest
(the input's size, mtime and sha256 of its first MiB, the model version and the options). A rerun
with the same input and options skips the finished chunks, so an interrupted run resumes; the
output is the concatenation of the parts, written under a temporary name and renamed, and is
byte-identical to an uninterrupted run's. Rows that cannot be scored (empty text, a text longer
than the server's limit, an unusable context value) go to `OUT.rejects.csv` (id, row, reason).

Engines: what turns the posts of the unfinished chunks into predictions; everything else (reading,
rejects, parts, manifest, resume, the output) is the same for all. `LocalEngine` (the default) runs
one `Predictor` in this process, length-sorted batches on torch's threads; `training.score_ray.RayEngine`
(`--engine ray`, imported only when asked for) runs the same chunk scoring in a pool of Ray actors,
one model load each, on this machine or a cluster. An engine yields each chunk's prediction columns
in chunk order, so a part is saved as soon as its chunk is back; the engine is not part of the
manifest (a run may resume with the other engine).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from sharelens.errors import SharelensError
from sharelens.labels import MOTIVES, TIERS
from sharelens.post import Context, ContextError, Post
from sharelens.text import _ZERO_WIDTH  # what normalise() drops: a text of only these is empty

FORMATS = (".csv", ".jsonl", ".parquet")
MAX_TEXT_CHARS = 2000  # the server's default SHARELENS_MAX_TEXT_CHARS
MANIFEST_FORMAT = "sharelens-score/1"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class ScoreOptions:
    text_column: str = "text"
    id_column: str | None = None
    context_columns: dict[str, str] = field(default_factory=dict)  # context field -> column name
    batch_size: int = 32
    chunk_size: int = 2000
    backend: str = "fp32"


@dataclass
class ScoreSummary:
    rows: int
    scored: int
    rejected: int
    chunks: int
    chunks_resumed: int
    seconds: float
    out: Path
    rejects: Path | None
    version: str

    def line(self) -> str:
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        rej = f"{self.rejected} rejected (see {self.rejects})" if self.rejected else "0 rejected"
        resumed = f"; {self.chunks_resumed} of {self.chunks} chunks resumed" if self.chunks_resumed else ""
        return (f"scored {self.scored} of {self.rows} rows, {rej}, with {self.version} in {self.seconds:.1f} s "
                f"({rate:.1f} posts/s{resumed}) -> {self.out}")


def parse_context_columns(spec: str | None) -> dict[str, str]:
    """"field=column,field=column" -> {field: column}; fields are the Context fields."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    known = Context.field_names()
    for item in spec.split(","):
        name, sep, column = item.strip().partition("=")
        if not sep or name.strip() not in known or not column.strip():
            raise SharelensError("E473", f"--context-columns takes field=column pairs separated by commas, "
                                 f"fields among {', '.join(known)}; got {item.strip()!r}")
        out[name.strip()] = column.strip()
    return out


def _format(path: Path, what: str) -> str:
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise SharelensError("E471", f"{what} {path} has an unknown extension {ext or '(none)'!r}; "
                             f"use one of {', '.join(FORMATS)}")
    return ext


def read_rows(path: Path) -> tuple[list[Any], list[str]]:
    """All rows (dicts; a JSONL line that is not an object is kept as is, to be rejected) and the
    column names, in file order."""
    ext = _format(path, "input")
    if not path.is_file():
        raise SharelensError("E470", f"no such input file {path}")
    try:
        if ext == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                rows: list[Any] = list(reader)
                return rows, list(reader.fieldnames or [])
        if ext == ".jsonl":
            rows, columns = [], {}
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = None
                    if isinstance(row, dict):
                        columns.update(dict.fromkeys(row))
                    rows.append(row)
            return rows, list(columns)
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pylist(), list(table.column_names)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        if isinstance(exc, SharelensError):
            raise
        raise SharelensError("E474", f"cannot read {path}: {str(exc).splitlines()[0][:200]}") from None


def _from_string(name: str, value: str) -> Any:
    """A CSV cell (always a string) -> the JSON-like value Context.from_mapping checks."""
    text = value.strip()
    if not text:
        return None
    if name in ("vip", "verified"):
        low = text.lower()
        return True if low in _TRUE else False if low in _FALSE else text
    if name == "followers":
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                return text
            return int(f) if f.is_integer() else f
    if name == "author_history":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def row_post(row: Any, opts: ScoreOptions, context_fields: dict[str, str], from_text: bool = False
             ) -> tuple[Post | None, str]:
    """(post, "") or (None, why it cannot be scored). from_text: the cells are strings (CSV) and
    are read as the field's type; in JSONL and Parquet a value of the wrong type is rejected."""
    if not isinstance(row, dict):
        return None, "not a JSON object"
    text = row.get(opts.text_column)
    if text is None:
        return None, "no text"
    if not isinstance(text, str):
        return None, f"text is not a string ({type(text).__name__})"
    if all(c.isspace() or c in _ZERO_WIDTH for c in text):
        return None, "empty text"
    if len(text) > MAX_TEXT_CHARS:
        return None, f"text longer than {MAX_TEXT_CHARS} characters ({len(text)})"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return None, "text contains invalid Unicode (a lone surrogate)"
    data: dict[str, Any] = {}
    for name, column in context_fields.items():
        value = row.get(column)
        if from_text and isinstance(value, str):
            value = _from_string(name, value)
        elif isinstance(value, float) and math.isnan(value):
            value = None
        elif name == "posted_at" and isinstance(value, (date, datetime)):
            value = value.isoformat()  # a Parquet date or timestamp column
        if value is not None:
            data[name] = value
    try:
        context = Context.from_mapping(data)
    except ContextError as exc:
        return None, f"context.{exc.field}: {exc.reason}" if exc.field else str(exc.message)
    except SharelensError as exc:
        return None, exc.message
    return Post(text=text, context=context), ""


def input_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    with path.open("rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_first_mib": head}


def _columns() -> list[str]:
    return (["id"] + [f"motive_{m}" for m in MOTIVES] + ["motive"] + [f"tier_{t}" for t in TIERS]
            + ["tier", "model_version", "context_used"])


def _schema(id_is_text: bool):
    import pyarrow as pa

    cols = [pa.field("id", pa.string() if id_is_text else pa.int64())]
    cols += [pa.field(f"motive_{m}", pa.float64()) for m in MOTIVES] + [pa.field("motive", pa.string())]
    cols += [pa.field(f"tier_{t}", pa.float64()) for t in TIERS]
    cols += [pa.field(n, pa.string()) for n in ("tier", "model_version", "context_used")]
    return pa.schema(cols)


def _atomic_write(dest: Path, write: Callable[[Path], None]) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _score_chunk(predictor, posts: list[Post], batch_size: int, bar) -> list:
    """Predictions in input order; texts sorted by length so each batch pads little."""
    order = sorted(range(len(posts)), key=lambda i: len(posts[i].text))
    out: list = [None] * len(posts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, pred in zip(idx, predictor.predict([posts[i] for i in idx], batch_size=batch_size), strict=True):
            out[i] = pred
        if bar is not None:
            bar.update(len(idx))
    return out


def prediction_columns(preds: list) -> dict[str, list]:
    """The output columns a chunk's predictions fill (all but `id` and `model_version`)."""
    cols: dict[str, list] = {}
    for j, m in enumerate(MOTIVES):
        cols[f"motive_{m}"] = [float(p.motive_probs[j]) for p in preds]
    cols["motive"] = [p.motive for p in preds]
    for j, t in enumerate(TIERS):
        cols[f"tier_{t}"] = [float(p.tier_probs[j]) for p in preds]
    cols["tier"] = [p.tier for p in preds]
    cols["context_used"] = [",".join(p.context_used) for p in preds]
    return cols


class ScoreEngine(Protocol):
    """Turns the posts of the unfinished chunks into prediction columns."""

    name: str

    @property
    def version(self) -> str:
        """The model version the engine scores with (written in the manifest and every row)."""
        ...

    def score_chunks(self, chunks: Iterable[tuple[int, list[Post]]], batch_size: int, bar
                     ) -> Iterator[tuple[int, dict[str, list]]]:
        """(chunk index, posts) in -> (chunk index, `prediction_columns`) out, in the same order; a
        chunk's rows in its posts' order. It may read ahead (Ray takes them all at once)."""
        ...

    def close(self) -> None:
        ...


class LocalEngine:
    """One Predictor in this process: each chunk in length-sorted batches (`_score_chunk`)."""

    name = "local"

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    @property
    def version(self) -> str:
        return self.predictor.version

    def score_chunks(self, chunks: Iterable[tuple[int, list[Post]]], batch_size: int, bar
                     ) -> Iterator[tuple[int, dict[str, list]]]:
        for k, posts in chunks:
            yield k, prediction_columns(_score_chunk(self.predictor, posts, batch_size, bar))

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RayOptions:
    """`--engine ray`: address None starts a local Ray (and stops it after); actors None is the
    cluster's CPUs divided by threads_per_actor (at least 1)."""

    address: str | None = None
    actors: int | None = None
    threads_per_actor: int = 1


def _write_out(parts: list[Path], dest: Path, ext: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None

    def write(tmp: Path) -> None:
        if ext == ".parquet":
            pq.write_table(table, tmp)
            return
        rows = table.to_pylist()
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            if ext == ".csv":
                w = csv.DictWriter(fh, fieldnames=_columns(), lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
            else:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    _atomic_write(dest, write)


def score_file(src: Path, out: Path, predictor, opts: ScoreOptions, progress: bool = True,
               after_chunk: Callable[[int], None] | None = None, engine: ScoreEngine | None = None
               ) -> ScoreSummary:
    """Score `src` into `out` (see the module doc) with `engine` (default: a LocalEngine over
    `predictor`, which may then be None). `after_chunk(k)` runs after chunk k is saved (tests
    inject a crash there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if engine is None:
        if predictor is None:
            raise ValueError("score_file needs a predictor or an engine")
        engine = LocalEngine(predictor)
    version = engine.version
    out_ext = _format(out, "output")
    if opts.batch_size < 1 or opts.chunk_size < 1:
        raise SharelensError("E473", "--batch-size and --chunk-size must be at least 1")
    rows, columns = read_rows(src)
    if opts.text_column not in columns:
        raise SharelensError("E472", f"{src} has no text column {opts.text_column!r} "
                             f"(columns: {', '.join(columns[:20]) or 'none'}); say which with --text-column")
    if opts.id_column is not None and opts.id_column not in columns:
        raise SharelensError("E472", f"{src} has no id column {opts.id_column!r}")
    missing = sorted(c for c in opts.context_columns.values() if c not in columns)
    if missing:
        raise SharelensError("E472", f"{src} has no context column(s) {', '.join(map(repr, missing))}")
    mapping = {n: opts.context_columns.get(n, n) for n in Context.field_names()}
    context_fields = {n: c for n, c in mapping.items() if c in columns}
    from_text = src.suffix.lower() == ".csv"

    t0 = time.perf_counter()
    work = out.with_name(out.name + ".parts")
    manifest = {"format": MANIFEST_FORMAT, "input": input_fingerprint(src), "model_version": version,
                "options": asdict(opts), "context_fields": context_fields}
    mpath = work / "manifest.json"
    if work.is_dir():
        try:
            same = json.loads(mpath.read_text(encoding="utf-8")) == manifest
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not mpath.exists():
        _atomic_write(mpath, lambda p: p.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                                    encoding="utf-8"))

    n_chunks = (len(rows) + opts.chunk_size - 1) // opts.chunk_size
    schema = _schema(opts.id_column is not None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="post", desc="score", dynamic_ncols=True)
    parts = [work / f"part-{k:05d}.parquet" for k in range(n_chunks)]
    rejects_of: dict[int, list] = {}  # chunk -> its rejects, for the rejects file in chunk order
    resumed, scored, todo = 0, 0, []
    for k in range(n_chunks):
        rej_path = work / f"rejects-{k:05d}.json"
        if parts[k].exists() and rej_path.exists():
            resumed += 1
            rejects_of[k] = json.loads(rej_path.read_text(encoding="utf-8"))
            scored += pq.read_metadata(parts[k]).num_rows
            if bar is not None:
                bar.update(min(len(rows), (k + 1) * opts.chunk_size) - k * opts.chunk_size)
        else:
            todo.append(k)

    pending: dict[int, tuple[list, list]] = {}  # chunk handed to the engine -> (ids, rejects)

    def chunk_posts() -> Iterator[tuple[int, list[Post]]]:
        for k in todo:
            ids, posts, chunk_rejects = [], [], []
            for r in range(k * opts.chunk_size, min(len(rows), (k + 1) * opts.chunk_size)):
                row = rows[r]
                rid: Any = r
                if opts.id_column is not None:
                    value = row.get(opts.id_column) if isinstance(row, dict) else None
                    rid = "" if value is None else str(value)
                post, reason = row_post(row, opts, context_fields, from_text=from_text)
                if post is None:
                    chunk_rejects.append([rid, r, reason])
                    if bar is not None:
                        bar.update(1)
                else:
                    ids.append(rid)
                    posts.append(post)
            pending[k] = (ids, chunk_rejects)
            yield k, posts

    results = engine.score_chunks(chunk_posts(), opts.batch_size, bar) if todo else iter(())
    try:
        for k, pcols in results:
            ids, chunk_rejects = pending.pop(k)
            n = len(ids)
            if any(len(v) != n for v in pcols.values()):
                raise RuntimeError(f"engine {engine.name} returned a chunk of the wrong length")
            cols = {"id": ids, **pcols, "model_version": [version] * n}
            table = pa.Table.from_pydict({c: cols[c] for c in _columns()}, schema=schema)
            _atomic_write(parts[k], lambda p, t=table: pq.write_table(t, p))
            _atomic_write(work / f"rejects-{k:05d}.json",
                          lambda p, c=chunk_rejects: p.write_text(json.dumps(c, ensure_ascii=False),
                                                                  encoding="utf-8"))
            scored += n
            rejects_of[k] = chunk_rejects
            if after_chunk is not None:
                after_chunk(k)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # a generator: stop the engine's work now, not when it is collected
        if bar is not None:
            bar.close()
    if len(rejects_of) != n_chunks:
        raise RuntimeError(f"engine {engine.name} returned {len(rejects_of) - resumed} of {len(todo)} chunks")
    rejected = [r for k in range(n_chunks) for r in rejects_of[k]]

    if scored == 0:
        shutil.rmtree(work)
        raise SharelensError("E475", f"no row of {src} could be scored ({len(rows)} rows, {len(rejected)} "
                             "rejected); nothing written")
    _write_out(parts, out, out_ext)
    rejects_path = out.with_name(out.name + ".rejects.csv")
    if rejected:
        def write_rejects(tmp: Path) -> None:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["id", "row", "reason"])
                w.writerows(rejected)

        _atomic_write(rejects_path, write_rejects)
    elif rejects_path.exists():
        rejects_path.unlink()
    shutil.rmtree(work)
    return ScoreSummary(rows=len(rows), scored=scored, rejected=len(rejected), chunks=n_chunks,
                        chunks_resumed=resumed, seconds=time.perf_counter() - t0, out=out,
                        rejects=rejects_path if rejected else None, version=version)


def check_paths(src: Path, out: Path) -> None:
    """Bad usage is refused before a model is loaded."""
    _format(src, "input")
    _format(out, "output")
    if not src.is_file():
        raise SharelensError("E470", f"no such input file {src}")


def make_engine(engine: str, bundle: Path, backend: str, ray: RayOptions | None = None) -> ScoreEngine:
    """"local": the model loads here; "ray": `training.score_ray.RayEngine` (Ray imported only now;
    E476 without it), the model loads in its actors."""
    if engine == "local":
        from sharelens.predictor import Predictor

        return LocalEngine(Predictor.from_bundle(bundle, backend=backend))
    if engine == "ray":
        from training.score_ray import RayEngine

        return RayEngine(bundle, backend=backend, options=ray or RayOptions())
    raise SharelensError("E473", f"--engine is local or ray, not {engine!r}")


def score(src: Path, out: Path, bundle: Path, opts: ScoreOptions, progress: bool = True,
          after_chunk: Callable[[int], None] | None = None, engine: str = "local",
          ray: RayOptions | None = None) -> ScoreSummary:
    check_paths(src, out)
    eng = make_engine(engine, bundle, opts.backend, ray)
    try:
        return score_file(src, out, None, opts, progress=progress, after_chunk=after_chunk, engine=eng)
    finally:
        eng.close()
