"""HTTP to a registry: bearer-token auth from a ``WWW-Authenticate`` challenge, retries with
backoff for connection failures and 5xx answers, and the scheme (``insecure`` means plain http).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import platform
import re
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import yarl

from .. import auth
from ..version import __version__
from .errors import RegistryError
from .settings import TransferSettings

log = logging.getLogger(__name__)

USER_AGENT = f"a3s-power/{__version__} ({platform.machine().lower()} {platform.system().lower()}) " \
             f"Python/{platform.python_version()}"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> dict[str, str] | None:
    """``Bearer realm="...",service="...",scope="..."`` as a dict, or None if it is not Bearer."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(rest)}


def host_of(url: str) -> str:
    return urlsplit(url).netloc.lower()


class RegistryTransport:
    """One registry host's session helper; keeps the bearer token it earned."""

    def __init__(self, session: aiohttp.ClientSession, settings: TransferSettings) -> None:
        self.session = session
        self.settings = settings
        self._tokens: dict[str, str] = {}  # registry host -> bearer token

    def auth_headers(self, url: str) -> dict[str, str]:
        token = self._tokens.get(host_of(url))
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _fetch_token(self, url: str, challenge: dict[str, str]) -> None:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError("registry asked for authentication without a realm", 401)
        query = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        query["ts"] = str(int(time.time()))
        query["nonce"] = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        token_url = realm + ("&" if "?" in realm else "?") + urlencode(sorted(query.items()))
        headers = {"User-Agent": USER_AGENT}
        if host_of(realm) == host_of(url):
            # Signed with this machine's key, as Ollama does: ollama.com grants a push only to a key
            # connected to the namespace's account. A realm on another host gets no signature.
            headers["Authorization"] = await asyncio.to_thread(
                auth.sign, f"GET,{token_url},{auth.EMPTY_BODY_DIGEST}".encode())
        # Sent exactly as signed: the token endpoint checks the signature against the URL it got.
        async with self.session.get(yarl.URL(token_url, encoded=True), headers=headers) as resp:
            if resp.status != 200:
                raise RegistryError(f"registry authentication failed: {resp.status} {resp.reason}", 401)
            try:
                body = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                raise RegistryError("registry authentication failed: token response is not JSON", 401) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RegistryError("registry authentication failed: no token in the response", 401)
        self._tokens[host_of(url)] = token

    async def open(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
                   allow_redirects: bool = True, retries: int | None = None, auth: bool = True,
                   timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientResponse:
        """Sends a request and returns the (unread) response; the caller releases it.

        A 401 with a Bearer challenge earns a token and is retried once; connection errors and
        retryable statuses are retried with backoff (only for bodies that can be resent).
        """
        retries = self.settings.max_retries if retries is None else retries
        attempt = 0
        authed_once = False
        while True:
            h = {"User-Agent": USER_AGENT, **(headers or {})}
            if auth:
                h.update(self.auth_headers(url))
            try:
                resp = await self.session.request(method, url, headers=h, data=data, allow_redirects=allow_redirects,
                                                  timeout=timeout or aiohttp.ClientTimeout(
                                                      total=None, sock_connect=self.settings.connect_timeout_s,
                                                      sock_read=self.settings.stall_s))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if attempt >= retries:
                    raise RegistryError(f"{method} {url}: {exc or type(exc).__name__}") from exc
                attempt += 1
                await asyncio.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
                continue
            if resp.status == 401 and auth and not authed_once:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                if challenge is None:
                    raise RegistryError("unauthorized: registry refused the request", 401)
                await self._fetch_token(url, challenge)
                authed_once = True
                continue
            if resp.status in RETRY_STATUSES and attempt < retries and not callable(getattr(data, "__aiter__", None)):
                resp.release()
                attempt += 1
                log.info("%s %s: %s, retrying", method, url, resp.status)
                await asyncio.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
                continue
            return resp


async def error_text(resp: aiohttp.ClientResponse) -> str:
    """A registry error body's message (Docker's ``{"errors":[{"message":...}]}``) or the reason."""
    try:
        body = await resp.json(content_type=None)
        if isinstance(body, dict):
            if isinstance(body.get("errors"), list) and body["errors"]:
                first = body["errors"][0]
                return str(first.get("message") or first.get("code") or resp.reason)
            if body.get("error"):
                return str(body["error"])
    except (ValueError, aiohttp.ClientError):
        pass
    return f"{resp.status} {resp.reason}"
