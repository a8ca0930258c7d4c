"""Remote models: a manifest whose config names a ``remote_host`` and ``remote_model`` instead of
weights (Ollama's cloud models, or a model on another Ollama-compatible server). A request for one
goes to that host's native chat or generate API, and its streamed answer comes back as Deltas, so
every API in front of the service (native, OpenAI, Anthropic) serves remote models as local ones.

Only hosts in ``OLLAMA_REMOTES`` (default ollama.com) are used. Requests to ollama.com, and to any
host when ``OLLAMA_AUTH`` is set, are signed with this machine's key, as Ollama's client signs them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import auth, cloud
from ..config import Config
from ..errors import RemoteError
from ..prompt.tools import ToolCall
from ..store.types import LocalModel

METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_cached_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


async def stream(config: Config, spec: LocalModel, path: str, body: dict[str, Any]) -> AsyncIterator[dict]:
    """The remote host's NDJSON answer to ``body`` on ``path``, line by line."""
    host = urlsplit(spec.remote_host).hostname or ""
    cloud_host = urlsplit(config.cloud_url).hostname
    if host not in config.remotes:
        raise RemoteError("this server cannot run this remote model", 400)
    if host == cloud_host and cloud.status(config)[0]:
        raise RemoteError(cloud.disabled_error("remote model is unavailable"), 403)
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
    url = spec.remote_host.rstrip("/") + path
    if host in ("ollama.com", cloud_host) or config.auth:
        signed, headers["Authorization"] = await asyncio.to_thread(auth.signed_path, "POST", path)
        url = spec.remote_host.rstrip("/") + signed
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json={**body, "stream": True}, headers=headers) as resp:
                if resp.status == 401:
                    raise RemoteError("unauthorized", 401, await asyncio.to_thread(auth.signin_url, config.cloud_url))
                if resp.status >= 400:
                    text = await resp.text()
                    try:
                        message = json.loads(text).get("error") or text
                    except (ValueError, AttributeError):
                        message = text or resp.reason
                    raise RemoteError(str(message), resp.status)
                async for raw in resp.content:
                    if raw.strip():
                        line = json.loads(raw)
                        if isinstance(line, dict) and line.get("error"):
                            raise RemoteError(str(line["error"]))
                        yield line
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise RemoteError(f"remote model {spec.remote_model} at {spec.remote_host}: "
                          f"{exc or type(exc).__name__}") from None


def tool_calls_of(message: dict) -> list[ToolCall]:
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        keep_id = {"id": call["id"]} if call.get("id") else {}
        calls.append(ToolCall(fn.get("name", ""), fn.get("arguments") or {}, **keep_id))
    return calls


def metrics_of(line: dict) -> dict[str, int]:
    return {k: int(line[k]) for k in METRICS if isinstance(line.get(k), (int, float))}
