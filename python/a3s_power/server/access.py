"""API keys (A3S_POWER_API_KEY, A3S_POWER_API_KEY_FILE): when any is set, every route but ``/`` (and
the web page's static files under ``/ui``, which ask for the key themselves) answers 401, in its
API's own error shape, unless the request carries one of them.

A key travels as ``Authorization: Bearer KEY`` on every route (the openai and ollama clients send
that), or as ``x-api-key: KEY`` on the Anthropic routes (the anthropic client's ``api_key``). Keys are
compared in constant time, through their SHA-256 digests so that neither their text nor their length
shows in the time an answer takes, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from aiohttp import web

from .errors import error_body, flavour

# What a load balancer or `a3s-power`'s own heartbeat asks (Ollama's "Ollama is running"): no key.
_OPEN_PATHS = frozenset({"/"})
# The web page's static files (server/ui.py): they hold no data, and the page asks for the key itself.
_PAGE = "/ui"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class KeyCheck:
    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ValueError("no API keys")

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys; every key is compared, whichever matches."""
        digest = _digest(presented)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found


def presented_key(request: web.Request, style: str) -> str | None:
    """The key a request carries: a Bearer token, else (Anthropic's routes) x-api-key."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if style == "anthropic":
        return request.headers.get("x-api-key", "").strip() or None
    return None


def _refusal(request: web.Request, style: str, missing: bool) -> web.Response:
    if style == "anthropic":
        message = ("missing API key: send it as x-api-key or Authorization: Bearer" if missing
                   else "invalid x-api-key")
    else:
        message = ("missing API key: send it as Authorization: Bearer KEY" if missing else "invalid API key")
    body = error_body(request.path, 401, message)
    if style == "openai":  # as OpenAI answers a missing or wrong key
        body["error"].update(type="invalid_request_error", code=None if missing else "invalid_api_key")
    challenge = 'Bearer realm="a3s-power"' + ("" if missing else ', error="invalid_token"')
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})


def key_middleware(keys: Iterable[str]):
    """The middleware that asks for a key; installed only when keys are configured, so that without
    them every route behaves as Ollama's."""
    check = KeyCheck(keys)

    @web.middleware
    async def require_key(request: web.Request, handler):
        path = request.path
        if request.method in ("GET", "HEAD") and (path in _OPEN_PATHS or path == _PAGE or path.startswith(_PAGE + "/")):
            return await handler(request)
        style = flavour(request.path)
        key = presented_key(request, style)
        if key is None or not check.accepts(key):
            return _refusal(request, style, missing=key is None)
        return await handler(request)

    return require_key
