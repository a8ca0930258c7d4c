"""Progress lines as Ollama's pull/push/create streams write them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable


def status(text: str, **fields) -> dict:
    return {"status": text, **{k: v for k, v in fields.items() if v is not None}}


class LayerProgress:
    """Counts one layer's bytes and tells when a new progress line is due."""

    def __init__(self, label: str, digest: str, total: int, interval_s: float) -> None:
        self.label = label
        self.digest = digest
        self.total = total
        self.completed = 0
        self._interval = interval_s
        self._last = 0.0
        self._last_value = -1

    def add(self, n: int) -> None:
        self.completed = min(self.total, self.completed + n)

    def line(self) -> dict:
        self._last = time.monotonic()
        self._last_value = self.completed
        return status(self.label, digest=self.digest, total=self.total, completed=self.completed)

    def due(self) -> bool:
        return self.completed != self._last_value and time.monotonic() - self._last >= self._interval


async def while_running(work: Awaitable, progress: LayerProgress) -> AsyncIterator[dict]:
    """Runs ``work``, yielding progress lines as they fall due and a last one when it ends."""
    task = asyncio.ensure_future(work)
    try:
        yield progress.line()
        while not task.done():
            await asyncio.wait({task}, timeout=progress._interval)
            if progress.due() and not task.done():
                yield progress.line()
        task.result()  # re-raises the work's failure
        progress.completed = progress.total
        yield progress.line()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
