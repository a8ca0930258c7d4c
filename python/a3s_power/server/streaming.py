"""Writing streamed answers: NDJSON for Ollama's API, server-sent events for OpenAI's and Anthropic's."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from aiohttp import web

from .errors import error_body, status_for


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def ndjson(request: web.Request, items: AsyncIterator[dict]) -> web.StreamResponse:
    """Streams items as NDJSON. A failure before the first line is an ordinary error response;
    after it, a final ``{"error": ...}`` line, as Ollama does."""
    iterator = items.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
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
        _, message = status_for(exc)
        await response.write((dumps({"error": message}) + "\n").encode())
    finally:
        await iterator.aclose() if hasattr(iterator, "aclose") else None
    await response.write_eof()
    return response


async def sse(request: web.Request, items: AsyncIterator[tuple[str | None, dict | str]],
              done_marker: bool = True) -> web.StreamResponse:
    """Streams (event, data) pairs as server-sent events; data "[DONE]" is written as is."""
    iterator = items.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def write(pair) -> None:
        event, data = pair
        text = data if isinstance(data, str) else dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await response.write(f"{prefix}data: {text}\n\n".encode())

    try:
        if first is not None:
            await write(first)
            async for pair in iterator:
                await write(pair)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001
        status, message = status_for(exc)
        body = error_body(request.path, status, message)
        await write(("error" if request.path.startswith("/v1/messages") else None, body))
    finally:
        await iterator.aclose() if hasattr(iterator, "aclose") else None
    if done_marker and not request.path.startswith("/v1/messages"):
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
