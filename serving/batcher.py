"""Dynamic batching of /predict requests that ask for no explanation (text-embeddings-inference style).

Why: one BERT forward over sixteen posts costs far less than sixteen forwards over one post each
(the weights are read once, the matrix products are wider), but clients send one post at a time.
So requests are queued, and one worker thread runs the model on whatever has arrived: the first
request waits at most `window_ms` for company, and a batch closes early once it holds
`max_texts` posts or `max_tokens` tokens (tokenizer tokens summed over its posts, as
text-embeddings-inference counts them). The window is only waited when company is likely: other requests already admitted
and on their way to the queue, or a previous batch that was shared. A lone client, one request
after the other, never pays it (Triton's default delay is 0 for that reason); under concurrency
the first batch may run small, and every later one waits. Each batch serves one predictor object: requests for different versions never share a
forward, and a request that resolved its model before a reload finishes on that model.

A batch is not one padded forward: posts of a post-length mix (5 to 500 tokens) padded to the
longest waste most of the compute, and on a CPU one padded forward over 16 random posts was
measured slower than 16 single forwards. `plan_forwards` sorts the batch by length and cuts it
where a text would carry more than `pad_slack` tokens of padding (or a forward would exceed
`max_texts` posts or `max_tokens` padded tokens): measured on the `fast` bundle, CPU, one thread,
batches of 16 random posts: 1 forward 58 posts/s, singles 94, slack 8-16 tokens 114-117.

Model threads: a collector thread forms batches; the forwards of a batch run on `workers` model
threads (one per core by default, each single-threaded: see serving.main), so the calls of one
32-text request, or the batches of two clients, run side by side. The collector takes the next
batch only once a model thread is free, which is what lets a queue build up into a batch while
the model is busy. Why not one call on all cores: torch's intra-op parallelism started from a
thread other than the main one ran at about half its main-thread speed here (OpenMP teams
contending for 2 cores), and one single-threaded call per core gave twice the batch throughput
(int8, 32-text requests: 70 -> 140+ posts/s in process).

Why threads with a condition variable rather than asyncio tasks: the model call blocks and has
to leave the event loop anyway, and the collector must wait for "window over or budget full"
precisely. Results travel back as `concurrent.futures.Future`s that any event loop can await:
uvicorn's, or the fresh loop per request of a TestClient without lifespan.

Explanations (Integrated Gradients: dozens of forward and backward passes per text) bypass the
batcher; batching them would only make cheap requests wait behind expensive ones."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool

from serving import errors
from serving.admission import Gate
from sharelens.post import Post
from sharelens.predictor import Prediction, Predictor
from sharelens.text import normalise

log = logging.getLogger("sharelens.serving")

# (model_version, posts, tokens, forwards, seconds) -> None: where metrics plug in.
BatchHook = Callable[[str, int, int, int, float], None]


def token_lengths(predictor: Predictor, posts: list[Post]) -> list[int]:
    """Tokens each text will occupy in the model window (special tokens included, truncated)."""
    limit = int(getattr(predictor, "max_length", 512))
    tokenizer = getattr(predictor, "tokenizer", None)
    if tokenizer is None:  # a test double: about one token per character, as for Chinese
        return [min(len(Post.of(p).text) + 2, limit) for p in posts]
    ids = tokenizer([normalise(Post.of(p).text).text for p in posts], truncation=True, max_length=limit)["input_ids"]
    return [len(i) for i in ids]


def plan_forwards(lengths: list[int], max_texts: int, max_tokens: int, pad_slack: int) -> list[list[int]]:
    """Indices of a batch grouped into model calls: longest first; a text joins the current call
    while it pads by at most `pad_slack` tokens and the call stays within `max_texts` posts and
    `max_tokens` padded tokens. A single text is always a call of its own."""
    calls: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if current:
            top = lengths[current[0]]
            if (top - lengths[i] > pad_slack or len(current) + 1 > max_texts
                    or (len(current) + 1) * top > max_tokens):
                calls.append(current)
                current = []
        current.append(i)
    if current:
        calls.append(current)
    return calls


@dataclass
class _Item:
    predictor: Predictor
    posts: list[Post]
    lengths: list[int]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class _Job:
    """One batch on its way through the model threads: its calls finish in any order."""

    predictor: Predictor
    items: list[_Item]
    posts: list[Post]
    lengths: list[int]
    calls: list[list[int]]
    preds: list[Prediction | None]
    remaining: int
    started: float = field(default_factory=time.perf_counter)
    failed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Batcher:
    def __init__(self, window_ms: float = 5.0, max_tokens: int = 8192, max_texts: int = 64, pad_slack: int = 16,
                 gate: Gate | None = None, on_batch: BatchHook | None = None, workers: int = 1,
                 thread_init: Callable[[], None] | None = None) -> None:
        self.window = window_ms / 1000
        self.max_tokens = max_tokens
        self.max_texts = max_texts
        self.pad_slack = pad_slack
        self.workers = max(1, workers)
        self._thread_init = thread_init
        self.gate = gate or Gate("predict", 1 << 30)
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        self._shared = False  # the last batch served several requests or left others waiting
        self._inflight_calls = 0  # model calls submitted to the model threads and not finished
        self._inflight_texts = 0

    # -- the request side (event loop) ----------------------------------------------------------
    async def predict(self, resolve: Callable[[], Predictor], posts: list[Post]) -> tuple[Predictor, list[Prediction]]:
        """Admit (or 429), resolve the model and count tokens off the loop, queue, await the answer."""
        if self._closing:
            raise errors.shutting_down()
        self.gate.acquire(len(posts))
        try:
            item = await run_in_threadpool(self._prepare, resolve, posts)
            self._put(item)
        except BaseException:
            self.gate.release(len(posts))
            raise
        # From here on the batcher releases the gate, also for a request whose client went away.
        return item.predictor, await asyncio.wrap_future(item.future)

    def submit(self, predictor: Predictor, posts: list[Post]) -> Future:
        """The same from any thread, blocking nowhere: admit (or 429), count tokens, queue.
        The future holds the posts' predictions once their batch has run."""
        self.gate.acquire(len(posts))
        try:
            item = _Item(predictor, posts, token_lengths(predictor, posts))
            self._put(item)
        except BaseException:
            self.gate.release(len(posts))
            raise
        return item.future

    @staticmethod
    def _prepare(resolve: Callable[[], Predictor], posts: list[Post]) -> _Item:
        predictor = resolve()
        return _Item(predictor, posts, token_lengths(predictor, posts))

    def _put(self, item: _Item) -> None:
        with self._cond:
            if self._closing:
                raise errors.shutting_down()
            self._queue.append(item)
            if self._thread is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sharelens-model",
                                                initializer=self._thread_init)
                self._thread = threading.Thread(target=self._run, name="sharelens-batcher", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new work, answer everything queued, stop the threads; True when they have stopped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- the collector (one thread): forms batches while the model threads are busy -------------
    def _run(self) -> None:
        try:
            while (batch := self._take()) is not None:
                try:
                    self._dispatch(batch)
                except Exception:  # noqa: BLE001 - the collector must survive anything one batch does
                    log.exception("batcher: a batch failed outside the model call")
        finally:
            assert self._pool is not None
            self._pool.shutdown(wait=True)  # draining: the calls already dispatched finish first

    def _take(self) -> list[_Item] | None:
        """Block for the next batch: once a model thread is free, the oldest request's model, when
        its window is over or the budget is full (at once while closing: draining should not wait
        for company). Waiting for a free thread is what lets a queue build up into a batch."""
        with self._cond:
            while not self._queue or self._inflight_calls >= self.workers:
                if self._closing and not self._queue:
                    return None
                self._cond.wait()
            head = self._queue[0]
            deadline = head.enqueued + self.window
            while not self._closing and not self._full(head.predictor) and self._company_likely():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._select(head.predictor)

    def _company_likely(self) -> bool:
        """Admitted posts neither queued nor in a model call yet are on their way to the queue."""
        return self._shared or self.gate.depth > sum(len(i.posts) for i in self._queue) + self._inflight_texts

    def _full(self, predictor: Predictor) -> bool:
        mine = [i for i in self._queue if i.predictor is predictor]
        return (sum(len(i.posts) for i in mine) >= self.max_texts
                or sum(sum(i.lengths) for i in mine) >= self.max_tokens)

    def _select(self, predictor: Predictor) -> list[_Item]:
        """Requests for `predictor` in arrival order while they fit; always at least the oldest."""
        chosen: list[_Item] = []
        rest: deque[_Item] = deque()
        n = tokens = 0
        full = False
        for item in self._queue:
            if full or item.predictor is not predictor:
                rest.append(item)
                continue
            m, t = n + len(item.posts), tokens + sum(item.lengths)
            if chosen and (m > self.max_texts or t > self.max_tokens):
                full = True  # later requests wait too: no overtaking within one model
                rest.append(item)
                continue
            chosen.append(item)
            n, tokens = m, t
        self._queue = rest
        self._shared = len(chosen) > 1 or self.gate.depth > n + self._inflight_texts
        return chosen

    def _dispatch(self, batch: list[_Item]) -> None:
        live = [i for i in batch if i.future.set_running_or_notify_cancel()]  # skip abandoned requests
        dead = sum(len(i.posts) for i in batch) - sum(len(i.posts) for i in live)
        if dead:
            self.gate.release(dead)
        if not live:
            return
        posts = [t for i in live for t in i.posts]
        lengths = [n for i in live for n in i.lengths]
        calls = plan_forwards(lengths, self.max_texts, self.max_tokens, self.pad_slack)
        job = _Job(live[0].predictor, live, posts, lengths, calls, [None] * len(posts), len(calls))
        assert self._pool is not None
        with self._cond:
            self._inflight_calls += len(calls)
            self._inflight_texts += len(posts)
        for call in calls:
            self._pool.submit(self._forward, job, call)

    # -- the model threads: one forward each ------------------------------------------------------
    def _forward(self, job: _Job, call: list[int]) -> None:
        error: BaseException | None = None
        try:
            if not job.failed:
                out = job.predictor.predict([job.posts[i] for i in call], batch_size=len(call))
                for i, pred in zip(call, out, strict=True):
                    job.preds[i] = pred
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request (a 500 there)
            error = exc
        with job.lock:
            job.remaining -= 1
            first_failure = error is not None and not job.failed
            job.failed = job.failed or error is not None
            last = job.remaining == 0
        try:
            if first_failure:
                for item in job.items:
                    item.future.set_exception(error)  # type: ignore[arg-type]
            if last:
                self._finish(job)
        finally:
            with self._cond:
                self._inflight_calls -= 1
                if last:
                    self._inflight_texts -= len(job.posts)
                self._cond.notify_all()

    def _finish(self, job: _Job) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(str(getattr(job.predictor, "version", "unknown")), len(job.posts), sum(job.lengths),
                               len(job.calls), time.perf_counter() - job.started)
            if not job.failed:
                at = 0
                for item in job.items:
                    item.future.set_result(job.preds[at:at + len(item.posts)])
                    at += len(item.posts)
        finally:
            self.gate.release(len(job.posts))
