"""uvicorn's h11 protocol with a deadline for the request head.

uvicorn times out idle keep-alive connections and nothing else: a client that opens a connection
and sends its request line and headers a byte at a time (slowloris) holds the connection, and one
of SHARELENS_MAX_CONNECTIONS, for as long as it likes; the header cap bounds its memory, not its
time. Here a request head must arrive within SHARELENS_HEADER_TIMEOUT_S of the connection opening
(or of the previous response on a keep-alive connection), else the connection is closed. The body
has its own deadline in the app (SHARELENS_BODY_TIMEOUT_S, serving.parsing), and the time a
request takes once its head is in is the app's business (explanations have their own deadline).

`serve` selects it with uvicorn's `http` option, a class path, so that every worker process
imports it; the deadline comes from the environment like every other setting."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("sharelens.serving")

ENV = "SHARELENS_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0


class HeadTimeoutH11Protocol(H11Protocol):
    def __init__(self, *args: Any, header_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = (header_timeout_s if header_timeout_s is not None
                                 else float(os.environ.get(ENV, DEFAULT_HEADER_TIMEOUT_S)))
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request head was parsed: the app has the request now
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request's head gets the same deadline
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is in the app (a keep-alive head that came in one read): not ours to cut
        log.warning("closed a connection from %s: no complete request head within %.3g s",
                    self.client, self.header_timeout_s)
        self.transport.close()
