"""Writing streamed answers, for every route that streams: NDJSON for Ollama's API (answers and
progress), server-sent events for OpenAI's and Anthropic's.

The first item is awaited before the response starts: whatever fails before it (an unknown model,
a prompt too long) is an ordinary error status. A failure after it is reported in the stream, in
the API's own shape, since the status is already sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .errors import ApiError, error_body, status_for

Describe = Callable[[BaseException], "tuple[int, str]"]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def _first(iterator: AsyncIterator[Any], describe: Describe | None) -> Any:
    """The first item, or None; ``describe`` turns a failure into its status and message."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
    except Exception as exc:
        if describe is None:
            raise
        status, message = describe(exc)
        raise ApiError(status, message) from None


async def ndjson(request: web.Request, items: AsyncIterator[dict], describe: Describe | None = None
                 ) -> web.StreamResponse:
    """Streams items as NDJSON; after the first line, a failure is a final ``{"error": ...}``
    line, as Ollama does. ``describe`` says what a failure means where status_for does not know
    (the model store's errors)."""
    iterator = items.__aiter__()
    first = await _first(iterator, describe)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        if first is not None:
            await response.write((dumps(first) + "\n").encode())
            async for item in iterator:
                await response.write((dumps(item) + "\n").encode())
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001 - reported in-band, the status is already sent
        _, message = (describe or status_for)(exc)
        await response.write((dumps({"error": message}) + "\n").encode())
    finally:
        await iterator.aclose() if hasattr(iterator, "aclose") else None
    await response.write_eof()
    return response


async def sse(request: web.Request, items: AsyncIterator[tuple[str | None, dict | str]],
              done_marker: bool = True) -> web.StreamResponse:
    """Streams (event, data) pairs as server-sent events; data "[DONE]" is written as is. After
    the first event, a failure is an error event in the API's error shape."""
    iterator = items.__aiter__()
    first = await _first(iterator, None)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def write(pair) -> None:
        event, data = pair
        text = data if isinstance(data, str) else dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await response.write(f"{prefix}data: {text}\n\n".encode())

    anthropic = request.path.startswith("/v1/messages")
    try:
        if first is not None:
            await write(first)
            async for pair in iterator:
                await write(pair)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001
        status, message = status_for(exc)
        await write(("error" if anthropic else None, error_body(request.path, status, message)))
    finally:
        await iterator.aclose() if hasattr(iterator, "aclose") else None
    if done_marker and not anthropic:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
