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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from anyio import to_thread
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from appliance.errors import GenerationTimeout, Overloaded

T = TypeVar("T")


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
    """Iterate a blocking token stream from async code, the model never waiting on the network.

    A thread of its own drives the stream and hands each piece to the event loop, so the
    model computes the next token while this one is being sent (a hop to a worker thread
    per token would make every token wait for the previous one's round trip: 15% of the
    speed of the default model on two cores). The generation is cancelled when it runs past
    ``timeout_s``, or when the consumer stops early (closes this iterator, or is cancelled
    because its client disconnected); this returns only once the model has stopped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    done = object()

    def hand_over(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is shutting down
            cancel.set()

    def produce() -> None:
        try:
            for piece in pieces:
                hand_over(piece)
                if cancel.is_set():
                    break
        except BaseException as exc:  # re-raised on the event loop's side
            hand_over(exc)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # in the thread that ran it: a generator cannot be closed elsewhere
            hand_over(done)

    worker = threading.Thread(target=produce, name="generation", daemon=True)
    deadline = loop.call_later(timeout_s, cancel.set)
    worker.start()
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            yield item
    finally:
        deadline.cancel()
        cancel.set()
        await asyncio.shield(to_thread.run_sync(worker.join))


async def run_cancellable(
    request: Request, work: Callable[[threading.Event], T], timeout_s: float
) -> T:
    """Run a blocking generation in a worker thread; stop it on timeout or disconnect.

    ``work`` receives the cancel event to pass to the model. When the client goes away the
    event is set and the result is still returned (nobody reads it); when the timeout passes
    first, ``GenerationTimeout`` is raised once the model has stopped.
    """
    cancel = threading.Event()
    task = asyncio.ensure_future(to_thread.run_sync(work, cancel))
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if task.done():
            break
        if time.monotonic() > deadline:
            timed_out = True
            cancel.set()
        elif await request.is_disconnected():
            cancel.set()
    result = task.result()
    if timed_out:
        raise GenerationTimeout(f"the generation ran past {timeout_s:g} s and was stopped")
    return result


class GatedStream(StreamingResponse):
    """A streamed response that holds the model gate until it is completely over.

    The gate is entered before the response is returned (so a full queue is a plain 503) and
    left here, whether the body ran to its end, failed, or was cancelled by a disconnect, even
    one that comes before the body's first chunk (when the generator's own ``finally`` would
    never run).
    """

    def __init__(self, content: AsyncIterator[str], gate: LlmGate) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gate.leave()
