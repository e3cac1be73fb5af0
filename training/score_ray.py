"""`sharelens score --engine ray`: the chunks of an archive scored by a pool of Ray actors.

Only how predictions are made changes (see `training.score`: reading, rejects, the resumable parts
and the output are the engine-independent part). The unfinished chunks become one Ray Dataset with
one row per chunk (its index, its texts and its posts' contexts as JSON strings: plain columns,
no pickled objects). `map_batches` hands one chunk at a time to a `ChunkScorer` actor, which loads
the bundle once (`Predictor.from_bundle`) and scores the chunk with the local engine's own
`_score_chunk` (the chunk's posts sorted by length, batches of --batch-size), so each chunk meets
the same batches as with `--engine local`. The dataset keeps its order (DataContext
`execution_options.preserve_order`), and its results are consumed as they stream back, so a part
is saved as soon as its chunk is done: a run killed half-way resumes like a local one.

A chunk is the unit of work: with A actors, --chunk-size should leave several chunks per actor.

Ray is imported only here, and only when this engine is made: `import training.score` never
imports it. Without Ray installed: E476. `address` None starts a local Ray (no dashboard, worker
logs not forwarded) and stops it afterwards; an address joins that cluster (whose nodes must have
sharelens installed and the bundle at the same path) and leaves it running.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sharelens.errors import SharelensError
from sharelens.post import Context, Post
from training.score import RayOptions, _score_chunk, prediction_columns

INSTALL_HINT = "pip install 'sharelens[ray]' (Ray Data 2.60)"
_QUIET_LOGGERS = ("ray", "ray.data")


def import_ray():
    """The ray module (with ray.data), or E476."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise SharelensError("E476", f"--engine ray needs the ray package with Ray Data ({exc.name or 'ray'} "
                             f"is not installed): {INSTALL_HINT}; or use --engine local") from None
    return ray


def chunk_row(k: int, posts: list[Post]) -> dict[str, Any]:
    """A chunk as one dataset row of plain values."""
    return {"chunk": k, "texts": [p.text for p in posts],
            "contexts": [json.dumps(p.context.to_dict(), ensure_ascii=False, sort_keys=True) for p in posts]}


def chunk_posts(texts: list[str], contexts: list[str]) -> list[Post]:
    """`chunk_row`'s columns back to the posts (their contexts were checked once by the driver)."""
    return [Post(text=t, context=Context.from_mapping(json.loads(c))) for t, c in zip(texts, contexts, strict=True)]


def result_schema():
    """What an actor returns: a row per chunk, its prediction columns as lists; a chunk it could not
    score carries `error_code` and `error` instead (returned, not raised: Ray Data's exception
    loses the original, and a constructor that raises has Ray restart the actor again and again,
    printing each failure)."""
    import pyarrow as pa

    fields = [pa.field("chunk", pa.int64()), pa.field("model_version", pa.string()), pa.field("node", pa.string()),
              pa.field("error_code", pa.string()), pa.field("error", pa.string())]
    for name in prediction_columns([]):
        kind = pa.string() if name in ("motive", "tier", "context_used") else pa.float64()
        fields.append(pa.field(name, pa.list_(kind)))
    return pa.schema(fields)


class ChunkScorer:
    """A Ray Data actor: one model load, then whole chunks scored as the local engine does."""

    def __init__(self, bundle: str, backend: str, batch_size: int, threads: int) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        from sharelens.predictor import Predictor

        torch.set_num_threads(threads)
        self.node = socket.gethostname()
        self.batch_size = batch_size
        self.schema = result_schema()
        self.predictor = None
        self.error: tuple[str, str] | None = None
        try:
            self.predictor = Predictor.from_bundle(bundle, backend=backend)
        except SharelensError as exc:
            self.error = (exc.code, f"{exc.message} (on Ray node {self.node})")
        except Exception as exc:  # noqa: BLE001 - reported by the driver as one line
            self.error = ("E478", f"the model did not load on Ray node {self.node}: {_first_line(exc)}")

    def __call__(self, batch):
        import pyarrow as pa

        rows = []
        for row in batch.to_pylist():
            out: dict[str, Any] = {"chunk": row["chunk"], "node": self.node, "error_code": None, "error": None,
                                   "model_version": None if self.predictor is None else self.predictor.version}
            error = self.error
            if error is None:
                try:
                    posts = chunk_posts(row["texts"], row["contexts"])
                    out.update(prediction_columns(_score_chunk(self.predictor, posts, self.batch_size, None)))
                except SharelensError as exc:
                    error = (exc.code, exc.message)
                except Exception as exc:  # noqa: BLE001
                    error = ("E478", f"scoring failed on Ray node {self.node}: {type(exc).__name__}: "
                             f"{_first_line(exc)}")
            if error is not None:
                out["error_code"], out["error"] = error
            rows.append(out)
        return pa.Table.from_pylist(rows, schema=self.schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _sharelens_cause(exc: BaseException) -> SharelensError | None:
    """The SharelensError an actor raised (a bundle missing on a node...), through Ray's wrappers."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SharelensError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


class RayEngine:
    """`--engine ray`; see the module doc."""

    name = "ray"

    def __init__(self, bundle: Path | str, backend: str = "fp32", options: RayOptions | None = None) -> None:
        from sharelens.bundle import verify_bundle
        from sharelens.quantize import check_backend

        self.options = options or RayOptions()
        if self.options.actors is not None and self.options.actors < 1:
            raise SharelensError("E473", "--ray-actors must be at least 1")
        if self.options.threads_per_actor < 1:
            raise SharelensError("E473", "--ray-threads-per-actor must be at least 1")
        self._ray = import_ray()
        self.backend = check_backend(backend)
        self.bundle = str(Path(bundle).resolve())
        # the version for the manifest, without loading the model here (the actors load it)
        self._version = verify_bundle(Path(self.bundle), check_hash=False).version
        self._started = False
        self._restore: list[tuple[logging.Logger, int]] = []
        self._context: tuple[Any, bool, bool] | None = None  # DataContext, its two settings before
        self.actors: int | None = None  # the pool size, once connected

    @property
    def version(self) -> str:
        return self._version

    def _connect(self) -> None:
        ray = self._ray
        for name in _QUIET_LOGGERS:
            lg = logging.getLogger(name)
            self._restore.append((lg, lg.level))
            lg.setLevel(logging.CRITICAL)  # a failure is our one E47x line, not Ray's traceback
        if not ray.is_initialized():
            address = self.options.address or "local"
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            except Exception as exc:  # ConnectionError, ValueError (bad address), RuntimeError...
                where = f"the Ray cluster at {address}" if address != "local" else "a local Ray"
                raise SharelensError("E477", f"cannot start or join {where}: {_first_line(exc)}") from None
            self._started = True
        threads = self.options.threads_per_actor
        cpus = int(ray.cluster_resources().get("CPU", 0))
        actors = self.options.actors or max(1, cpus // threads)
        if actors * threads > cpus:
            raise SharelensError("E477", f"the Ray cluster has {cpus} CPUs, too few for {actors} actors of "
                                 f"{threads} threads each; lower --ray-actors or --ray-threads-per-actor")
        self.actors = actors

    def score_chunks(self, chunks: Iterable[tuple[int, list[Post]]], batch_size: int, bar
                     ) -> Iterator[tuple[int, dict[str, list]]]:
        import pyarrow as pa

        work = list(chunks)  # the driver has every row already; the dataset takes them all at once
        busy = [(k, posts) for k, posts in work if posts]
        batches = None
        if busy:
            if self.actors is None:
                self._connect()
            ray = self._ray
            ctx = ray.data.DataContext.get_current()
            if self._context is None:
                self._context = (ctx, ctx.execution_options.preserve_order, ctx.enable_progress_bars)
            ctx.execution_options.preserve_order = True
            ctx.enable_progress_bars = False
            blocks = [pa.Table.from_pylist([chunk_row(k, posts)]) for k, posts in busy]  # a block per chunk
            # every actor loads the model: never more of them than chunks to score
            ds = ray.data.from_arrow(blocks).map_batches(
                ChunkScorer, batch_size=1, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=min(self.actors, len(busy))), num_cpus=self.options.threads_per_actor,
                fn_constructor_kwargs={"bundle": self.bundle, "backend": self.backend, "batch_size": batch_size,
                                       "threads": self.options.threads_per_actor})
            batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        results = self._rows(batches)
        try:
            for k, posts in work:
                if not posts:
                    yield k, prediction_columns([])
                    continue
                row = next(results)
                if row["error_code"] is not None:
                    raise SharelensError(row["error_code"], row["error"])
                if row["chunk"] != k:
                    raise RuntimeError(f"Ray returned chunk {row['chunk']} where chunk {k} was due")
                if row["model_version"] != self._version:
                    raise SharelensError("E478", f"the actor on node {row['node']} loaded model "
                                         f"{row['model_version']} from {self.bundle}, not {self._version}: "
                                         "every node must have the same bundle at that path")
                if bar is not None:
                    bar.update(len(posts))
                yield k, {c: row[c] for c in prediction_columns([])}
        finally:
            results.close()

    def _rows(self, batches) -> Iterator[dict[str, Any]]:
        if batches is None:
            return
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except (KeyboardInterrupt, GeneratorExit):
                    raise
                except Exception as exc:
                    cause = _sharelens_cause(exc)
                    if cause is not None:
                        raise cause from None
                    raise SharelensError("E478", f"a Ray actor failed while scoring: {_first_line(exc)}") from None
                yield from batch.to_pylist()
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        if self._context is not None:
            ctx, order, bars = self._context
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = order, bars
            self._context = None
        if self._started:
            self._ray.shutdown()
            self._started = False
        for lg, level in reversed(self._restore):
            lg.setLevel(level)
        self._restore.clear()

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
