"""What the pure ASGI middlewares share: watching a response go by."""

from __future__ import annotations

import time

from starlette.types import Message, Send


class ResponseWatch:
    """Wraps ``send``: notes the response status (500 until one starts) and the elapsed time."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500
        self._started = time.perf_counter()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._started
