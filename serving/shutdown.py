"""One time budget from SIGTERM to exit, shared by everything that shutting down waits for.

Before, each wait had its own: uvicorn let in-flight requests finish for up to
shutdown_timeout_s, then the lifespan gave the batcher's drain shutdown_timeout_s more, and an
explanation whose request had been cut kept its worker thread busy until it was done (anyio's
worker threads are not daemons: the interpreter waits for them at exit). An orchestrator that
kills after its own grace period (Kubernetes: 30 s) then killed a process that was still draining.

Now: the clock starts at the signal (`watch_signals` chains onto the handler uvicorn installs);
uvicorn's graceful period is the whole budget (serving.cli), the drain gets whatever the
graceful period left, and when the drain starts `stopping` is set, so that explanations still
running (their requests already cut) stop before their next post (serving.explain)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

log = logging.getLogger("sharelens.serving")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownBudget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None  # time.monotonic() of the signal, or of the drain's start
        self.stopping = threading.Event()  # set: explanations stop at their next post
        self._lock = threading.Lock()

    def begin(self, at: float | None = None) -> None:
        """Start the clock (the first call counts; later ones do nothing)."""
        with self._lock:
            if self.started is None:
                self.started = time.monotonic() if at is None else at

    def remaining(self) -> float:
        """Seconds left of the budget (the clock starts now if nothing started it)."""
        self.begin()
        assert self.started is not None
        return max(0.0, self.seconds - (time.monotonic() - self.started))

    def stop(self) -> None:
        self.begin()
        self.stopping.set()


def watch_signals(budget: ShutdownBudget) -> None:
    """Start `budget`'s clock on SIGTERM / SIGINT, then run the handler installed before (uvicorn's,
    which starts the graceful shutdown). uvicorn puts back its predecessors when it exits, so
    nothing of this outlives the server. Signals are the main thread's only: elsewhere (a test
    client's thread) this does nothing and the clock starts with the drain."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous=previous) -> None:
            budget.begin()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:  # nobody else listens: what the signal would have done
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        try:
            signal.signal(sig, handler)
        except (ValueError, OSError) as exc:  # an embedding that forbids it: the drain starts the clock
            log.warning("cannot watch %s: %s", signal.Signals(sig).name, exc)
