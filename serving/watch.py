"""Every worker process follows the registry: a promotion reaches all of them, not only the one
that took the request.

With several workers (SHARELENS_WORKERS > 1) each process has its own ModelStore, and
POST /admin/reload or /admin/aliases reaches the one worker that answered it; `make promote`
(training.cli) reaches none. So each process polls registry.json every SHARELENS_REGISTRY_POLL_S
seconds: a `stat` (inode, size, mtime; the registry is replaced whole by its writers, so every
write is a new inode), and only when that changed, a read of the file and
`ModelStore.reload_if_moved`: when the default alias (production, then latest, or
SHARELENS_DEFAULT_REF) now names another version than the one serving, load, warm and swap
exactly as /admin/reload does. A version that cannot be loaded, or a registry that cannot be read,
is refused (logged, and counted in sharelens_model_reloads_total{result="failure"}) and the old
model keeps serving; it is tried again when registry.json changes again, not at every poll (a
load reads and hashes the whole bundle).

Both the stat and the read run in a thread, never on the event loop. The watch is an asyncio task
of the lifespan, cancelled at shutdown (a load it started then finishes in its thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from serving.store import ModelStore, Swap
from sharelens.errors import SharelensError

log = logging.getLogger("sharelens.serving")

Signature = tuple[int, int, int]


class RegistryWatcher:
    def __init__(self, store: ModelStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self._seen: Signature | None = None
        self._checked = False  # the first poll always compares the registry with what serves
        self._last_problem: str | None = None

    def signature(self) -> Signature | None:
        """(inode, size, mtime in ns) of registry.json; None when there is none."""
        try:
            st = os.stat(self.store.registry.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def check(self) -> Swap | None:
        """One poll (blocking: run it in a thread). The Swap when the default model changed."""
        if not self.store.ready and self.store.load_error is None:
            return None  # the first load is still running; it reads the registry itself
        seen = self.signature()
        if self._checked and seen == self._seen:
            return None
        try:
            swap = self.store.reload_if_moved()
        except SharelensError as exc:  # 409: logged and counted by the store; the old model serves on
            log.warning("registry watch: %s keeps serving %s: %s", self.store.name, self.store.default_version,
                        getattr(exc, "detail", exc))
            swap = None
        self._seen, self._checked = seen, True  # after the attempt: an unexpected error (raised) is retried
        if swap is not None:
            log.info("registry watch: followed the default alias of %s to %s", self.store.name, swap.version)
        return swap

    async def run(self) -> None:
        """Poll until cancelled. Never raises but CancelledError: a worker must not lose its watch
        (nor crash) over one bad poll."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await loop.run_in_executor(None, self.check)
                self._last_problem = None
            except Exception as exc:  # noqa: BLE001 - logged (once per distinct problem); next poll tries again
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._last_problem:
                    log.error("registry watch: cannot check %s: %s", self.store.registry.path, problem,
                              exc_info=not isinstance(exc, (OSError, SharelensError)))
                self._last_problem = problem


def start(store: ModelStore, interval_s: float) -> asyncio.Task[None] | None:
    """The watch as a task of the running loop (None when interval_s is 0: the watch is off)."""
    if interval_s <= 0:
        return None
    return asyncio.get_running_loop().create_task(RegistryWatcher(store, interval_s).run(),
                                                  name="sharelens-registry-watch")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
