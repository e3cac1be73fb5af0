"""Explanations are bounded: a fixed number of slots, a deadline per request, a share per client,
and work that stops when nobody is waiting for it.

Why: one explanation is a large job (a batched forward pass over every leave-one-word-out variant
of a post, or forward and backward passes over Integrated Gradients' steps) that wants every core.
Before, up to 32 ran at once, each with all cores' threads, so each was slowed by the others;
nothing stopped one whose client had hung up; and two clients sending 16 long posts each held the
service for about a minute while everyone else got 429.

- `ExplainSlots`: at most `slots` requests explain at once (cores // explain threads, at least
  one), so the work never has more threads than the machine has cores. A request waits for a slot
  on the event loop, not in a thread, and only until its deadline.
- `Deadline` / `StopToken`: the request's deadline (SHARELENS_EXPLAIN_DEADLINE_S) covers the
  wait and the work. The worker thread checks the token before each post and between a post's
  parts; past the deadline it stops and the client gets 503 with Retry-After (E462). A watcher
  on the event loop sets the token when the client disconnects, so the thread stops at its next
  check and frees the slot.
- `ClientShare`: a token bucket per client (its API key when it sends one, else its address):
  `rate` texts a second with bursts of `burst`; a client over its share gets 429 with the
  Retry-After that refills the bucket (E463), and other clients keep their slots.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio

from serving import errors

REASONS = ("deadline", "disconnect", "shutdown")


class StopToken:
    """Set once, from any thread, with the reason; read by the explaining thread between posts."""

    def __init__(self, seconds: float | None = None, shutdown: threading.Event | None = None) -> None:
        self.seconds = seconds  # the deadline, from now
        self.deadline = None if seconds is None else time.monotonic() + seconds  # time.monotonic()
        self.shutdown = shutdown
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def check(self) -> None:
        """Raise the error that ends the work, if it must end; called by the worker thread."""
        if self.shutdown is not None and self.shutdown.is_set():
            self.set("shutdown")
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self.set("deadline")
        if self._event.is_set():
            raise StoppedError(self.reason or "deadline")

    def is_set(self) -> bool:
        return self._event.is_set()


class StoppedError(Exception):
    """The explanation work stopped before its end (reason: one of REASONS)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def client_key(api_key: str | None, address: str | None) -> str:
    """Whom the share is for: the client's address, and with it the digest of its API key when the
    server checks keys (never the key itself, which would then sit in memory as a dict key).

    Why not the key alone: the server has one key today (SHARELENS_API_KEY), so a share per key
    would be one bucket for every client; and when the server checks no key, a key in the request
    is unverified and a client could take a fresh share per request by inventing keys."""
    where = "addr:" + (address or "unknown")
    if api_key:
        return where + "|key:" + hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return where


class ClientShare:
    """Token buckets, one per client, `rate` texts/s refilled up to `burst`; rate 0 turns it off.
    At most `max_clients` buckets are kept, least recently used out first: a forgotten client
    starts again with a full bucket, which is what an idle one would have anyway."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, n: int) -> None:
        """Take `n` texts from `key`'s bucket or raise the 429 (E463). A request larger than the
        burst is admitted from a full bucket (and empties it), like the gates' idle rule."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            need = min(float(n), float(self.burst))
            if tokens + 1e-9 < need:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((need - tokens) / self.rate)
                raise errors.explain_share_exhausted(max(1, wait))
            self._buckets[key] = (tokens - n, now)  # may go below zero: a large request is paid back
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


class ExplainSlots:
    """At most `slots` explaining requests at once, waited for on the event loop until a deadline."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._limiter: anyio.CapacityLimiter | None = None  # made in the loop that uses it

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        return self._limiter

    @property
    def busy(self) -> int:
        return 0 if self._limiter is None else int(self._limiter.borrowed_tokens)

    async def run(self, work: Callable[[StopToken], object], token: StopToken, retry_after_s: int,
                  disconnected: Callable[[], Awaitable[bool]] | None = None, poll_s: float = 0.1):
        """Wait for a slot (until the token's deadline), then run `work(token)` in a worker thread
        while watching for the client's disconnect. Raises the 503 (E462) when the deadline passes,
        `StoppedError("disconnect")` when the client left, and whatever `work` raises."""
        remaining = None if token.deadline is None else token.deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            token.set("deadline")
            raise errors.explain_deadline(retry_after_s, token.seconds or 0)
        got = False
        with anyio.move_on_after(remaining):
            await self.limiter.acquire()
            got = True
        if not got:
            token.set("deadline")
            raise errors.explain_deadline(retry_after_s, token.seconds or 0)
        watcher = None
        try:
            if disconnected is not None:
                watcher = asyncio.ensure_future(_watch(disconnected, token, poll_s))
            try:
                return await anyio.to_thread.run_sync(work, token)
            except StoppedError as exc:
                if exc.reason == "deadline":
                    raise errors.explain_deadline(retry_after_s, token.seconds or 0) from None
                if exc.reason == "shutdown":
                    raise errors.shutting_down() from None
                raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self.limiter.release()


async def _watch(disconnected: Callable[[], Awaitable[bool]], token: StopToken, poll_s: float) -> None:
    while not token.is_set():
        if await disconnected():
            token.set("disconnect")
            return
        await asyncio.sleep(poll_s)
