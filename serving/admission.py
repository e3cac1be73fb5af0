"""Load shedding: a bounded count of texts in flight, answering 429 beyond it.

Why refuse rather than queue without bound: a CPU model serves a fixed number of texts per
second; once the backlog is longer than clients are willing to wait, every request in it times
out, the server keeps computing answers nobody reads, and the overload never ends. Refusing at
the door with `Retry-After` keeps latency bounded for the requests that are admitted and tells
clients (and their load balancer) to back off. The count is in texts, not requests: a 64-text
batch costs 64 times a single post.

One rule makes the limit safe to configure: an idle gate admits any request, so a batch larger
than the limit is slow but never refused forever."""

from __future__ import annotations

import threading
from collections.abc import Callable

from serving import errors

# (queue name, texts in flight) / (queue name): where metrics plug in.
DepthHook = Callable[[str, int], None]
RejectHook = Callable[[str], None]


class Gate:
    """Thread-safe: requests acquire on the event loop, the batcher worker releases from its thread."""

    def __init__(self, name: str, limit: int, retry_after_s: int = 1, on_depth: DepthHook | None = None,
                 on_reject: RejectHook | None = None) -> None:
        self.name = name
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._depth = 0
        self._lock = threading.Lock()
        self._on_depth = on_depth
        self._on_reject = on_reject

    @property
    def depth(self) -> int:
        return self._depth

    def acquire(self, n: int) -> None:
        """Admit `n` texts or raise the 429 ApiError; never blocks."""
        with self._lock:
            if self._depth > 0 and self._depth + n > self.limit:
                refused = True
            else:
                refused = False
                self._depth += n
                depth = self._depth
        if refused:
            if self._on_reject is not None:
                self._on_reject(self.name)
            raise errors.overloaded(self.retry_after_s)
        if self._on_depth is not None:
            self._on_depth(self.name, depth)

    def release(self, n: int) -> None:
        with self._lock:
            self._depth = max(0, self._depth - n)
            depth = self._depth
        if self._on_depth is not None:
            self._on_depth(self.name, depth)
