"""Backpressure for the chat model, and its streams bridged into async code.

The model generates for one request at a time. :class:`LlmGate` lets a bounded number of
requests wait for it; one more is refused at once with 503 and ``Retry-After``, and a
request that waits longer than the queue timeout is refused the same way. A generation
that runs past the per-request timeout is stopped through its cancel event, and so is one
whose client goes away (the async iterator is closed or cancelled).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from anyio import to_thread
from fastapi import Request

from appliance.errors import Overloaded


@dataclass
class LlmGate:
    """One generation at a time; at most ``queue_limit`` requests waiting behind it.

    Attributes:
        queue_limit: Requests allowed to wait; the next one gets 503.
        queue_timeout_s: Longest wait for the model before a 503.
        request_timeout_s: Longest generation; the stream is cancelled after it.
    """

    queue_limit: int
    queue_timeout_s: float
    request_timeout_s: float
    _semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    _waiting: int = 0
    _running: int = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    def _busy(self, why: str) -> Overloaded:
        return Overloaded(
            f"the model is busy ({why}); retry later",
            retry_after=max(1, round(self.queue_timeout_s / 4)),
        )

    async def enter(self) -> None:
        """Wait for the model; ``Overloaded`` when the queue is full or the wait too long.

        Every successful ``enter`` must be paired with one :meth:`leave`.
        """
        if self._waiting >= self.queue_limit:
            raise self._busy(f"{self._waiting} requests are already waiting")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=self.queue_timeout_s)
        except TimeoutError:
            raise self._busy(f"waited {self.queue_timeout_s:g} s for it") from None
        finally:
            self._waiting -= 1
        self._running += 1

    def leave(self) -> None:
        self._running -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the model for the body of the ``async with``."""
        await self.enter()
        try:
            yield
        finally:
            self.leave()


def llm_gate(request: Request) -> LlmGate:
    """The app's gate (built in its lifespan)."""
    gate: LlmGate = request.app.state.llm_gate
    return gate


async def stream_in_thread(
    pieces: Iterator[str], cancel: threading.Event, timeout_s: float
) -> AsyncIterator[str]:
    """Iterate a blocking token stream from async code, one worker-thread hop per piece.

    The generation is cancelled (``cancel`` set, then the stream closed in its thread) when
    it runs past ``timeout_s``, or when the consumer stops early: closes this iterator or is
    cancelled because its client disconnected.
    """
    deadline = time.monotonic() + timeout_s
    done = object()
    try:
        while True:
            if time.monotonic() > deadline:
                cancel.set()
            piece = await to_thread.run_sync(next, pieces, done)
            if piece is done:
                return
            assert isinstance(piece, str)
            yield piece
    finally:
        cancel.set()
        close = getattr(pieces, "close", None)
        if close is not None:
            await asyncio.shield(to_thread.run_sync(close))
