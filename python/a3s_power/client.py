"""A small client of the A3S Power (or Ollama) HTTP API, for the CLI.

Like Ollama's CLI, every command talks to the server at OLLAMA_HOST.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .errors import A3SPowerError
from .hosts import parse_host


class ClientError(A3SPowerError):
    def __init__(self, status: int, message: str, signin_url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.signin_url = signin_url  # where a 401 says to connect this machine to an ollama.com account


def base_url(host: str) -> str:
    """The server's URL from OLLAMA_HOST, read as Ollama reads it (hosts.py)."""
    return parse_host(host).url(for_client=True)


class Client:
    def __init__(self, host: str, timeout: float | None = None, sign: bool = False) -> None:
        self.base = base_url(host)
        self.sign = sign  # OLLAMA_AUTH: each request carries a ts query and this machine's signature
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    def signed(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The URL for ``path`` and the headers that go with it (signed when ``sign`` is set)."""
        if not self.sign:
            return self.base + path, {}
        from . import auth

        signed_path, signature = auth.signed_path(method, path)
        return self.base + signed_path, {"Authorization": signature}

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Client as an async context manager"
        return self._session

    @staticmethod
    async def _raise_for(response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        text = await response.text()
        signin_url = None
        try:
            body = json.loads(text)
            message = body.get("error", text)
            signin_url = body.get("signin_url")
        except (json.JSONDecodeError, AttributeError):
            message = text or response.reason or f"HTTP {response.status}"
        if isinstance(message, dict):
            message = message.get("message", str(message))
        raise ClientError(response.status, str(message), signin_url)

    async def heartbeat(self) -> bool:
        try:
            url, headers = self.signed("HEAD", "/")
            async with self.session.head(url, headers=headers) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        url, headers = self.signed(method, path)
        async with self.session.request(method, url, json=body, headers=headers) as response:
            await self._raise_for(response)
            text = await response.text()
            return json.loads(text) if text.strip() else None

    async def stream(self, method: str, path: str, body: Any = None) -> AsyncIterator[dict]:
        """NDJSON lines; a line carrying "error" ends the stream with that error."""
        url, headers = self.signed(method, path)
        async with self.session.request(method, url, json=body, headers=headers) as response:
            await self._raise_for(response)
            async for raw in response.content:
                line = raw.strip()
                if not line:
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and "error" in item:
                    raise ClientError(response.status, str(item["error"]))
                yield item
