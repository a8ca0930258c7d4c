"""A small client of the A3S Power (or Ollama) HTTP API, for the CLI.

Like Ollama's CLI, every command talks to the server at OLLAMA_HOST.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
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


class KeyRefused(A3SPowerError):
    """The server asks for an API key (A3S_POWER_API_KEY) and none, or another, was sent."""

    http_status = 401


def tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """What an https:// server's certificate is checked against: ``ca_file``'s CAs, else the system's."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise A3SPowerError(f"A3S_POWER_CA_FILE {ca_file}: {exc.strerror or exc}") from None


class Client:
    def __init__(self, host: str, timeout: float | None = None, sign: bool = False, api_key: str | None = None,
                 ca_file: Path | None = None) -> None:
        self.base = base_url(host)
        self.sign = sign  # OLLAMA_AUTH: each request carries a ts query and this machine's signature
        self.api_key = api_key  # A3S_POWER_API_KEY's first key, as a Bearer token
        self.ca_file = ca_file
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    def signed(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The URL for ``path`` and the headers that go with it: the API key, or the signature when
        ``sign`` is set. The key takes the Authorization header: A3S Power checks keys, not signatures."""
        if self.api_key:
            return self.base + path, {"Authorization": f"Bearer {self.api_key}"}
        if not self.sign:
            return self.base + path, {}
        from . import auth

        signed_path, signature = auth.signed_path(method, path)
        return self.base + signed_path, {"Authorization": signature}

    async def __aenter__(self) -> Client:
        context = tls_context(self.ca_file)
        connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
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
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status == 401 and challenge.lower().startswith("bearer"):
            # The server's API key, not ollama.com's sign-in: the CLI must not offer to sign in.
            if "invalid_token" in challenge:
                raise KeyRefused("the server refused the API key in A3S_POWER_API_KEY")
            raise KeyRefused("the server wants an API key: set A3S_POWER_API_KEY to one of its keys")
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
        except aiohttp.ClientSSLError:
            raise  # a server answers, over TLS, with a certificate not trusted: starting another cannot help
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
