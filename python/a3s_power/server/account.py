"""ollama.com, as Ollama's server exposes it: POST /api/me (who this machine's key is connected
to), POST /api/signout (disconnect the key; also the deprecated DELETE /api/user/keys/{encodedKey}),
GET /api/status (whether the cloud is switched off) and POST /api/experimental/web_search and
web_fetch. Each call to ollama.com is signed with the key (auth.py)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import web

from .. import auth, cloud
from ..errors import A3SPowerError, RemoteError
from ..registry.transport import USER_AGENT
from .errors import ApiError
from .state import state_of

log = logging.getLogger(__name__)


async def _cloud(request: web.Request, method: str, path: str, body: bytes | None = None) -> tuple[int, object]:
    """A signed call to ollama.com's API: its status and JSON body (None if it had none)."""
    base = state_of(request).config.cloud_url
    try:
        signed, signature = await asyncio.to_thread(auth.signed_path, method, path)
    except A3SPowerError as exc:  # an unreadable key
        raise ApiError(500, str(exc)) from None
    headers = {"Authorization": signature, "User-Agent": USER_AGENT, "Accept": "application/json",
               "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.request(method, base + signed, headers=headers, data=body) as resp:
                text = await resp.text()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("%s %s: %s", method, base + path, exc or type(exc).__name__)
        raise ApiError(502, f"could not reach {base}") from None
    try:
        body = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        body = None
    return resp.status, body


def _unauthorized(request: web.Request) -> RemoteError:
    """Ollama's 401: ``{"error": "unauthorized", "signin_url": ...}`` (see errors.error_middleware)."""
    return RemoteError("unauthorized", 401, auth.signin_url(state_of(request).config.cloud_url))


async def whoami(request: web.Request) -> web.Response:
    status, user = await _cloud(request, "POST", "/api/me")
    if status == 401 or (status == 200 and not (isinstance(user, dict) and user.get("name"))):
        raise _unauthorized(request)
    if status != 200:
        message = user.get("error") if isinstance(user, dict) else None
        return web.json_response({"error": message or f"ollama.com answered {status}"}, status=502)
    return web.json_response(user)


async def signout(request: web.Request) -> web.Response:
    key = await asyncio.to_thread(auth.encoded_public_key)
    status, _ = await _cloud(request, "DELETE", f"/api/user/keys/{key}")
    if status == 401:
        return web.json_response({"error": "you are not currently signed in"}, status=401)
    if status >= 400:
        return web.json_response({"error": "there was an error signing out"}, status=500)
    return web.json_response(None)


async def cloud_status(request: web.Request) -> web.Response:
    disabled, source = cloud.status(state_of(request).config)
    return web.json_response({"cloud": {"disabled": disabled, "source": source}})


def _web_proxy(path: str, unavailable: str):
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        if not body.strip():
            raise ApiError(400, "missing request body")
        if cloud.status(state_of(request).config)[0]:
            raise ApiError(403, cloud.disabled_error(unavailable))
        status, answer = await _cloud(request, "POST", path, body)
        if status == 401:
            raise _unauthorized(request)
        return web.json_response(answer, status=status)

    return handler


async def show_cloud_model(request: web.Request, name: str, verbose: bool) -> dict | None:
    """/api/show for a ``:cloud`` / ``-cloud`` name without a manifest: ollama.com's answer for the
    model it means, with where it runs. None for any other name."""
    config = state_of(request).config
    spec = cloud.cloud_model(config, name)
    if spec is None:
        return None
    if cloud.status(config)[0]:
        raise ApiError(403, cloud.disabled_error("remote model details are unavailable"))
    status, info = await _cloud(request, "POST", "/api/show",
                                json.dumps({"model": spec.remote_model, "verbose": verbose}).encode())
    if status == 401:
        raise _unauthorized(request)
    if status == 404:
        raise ApiError(404, f"model '{name}' not found")
    if status != 200 or not isinstance(info, dict):
        raise ApiError(502, "remote model details are unavailable")
    return {**info, "remote_model": spec.remote_model, "remote_host": spec.remote_host}


def setup(app: web.Application) -> None:
    app.router.add_get("/api/status", cloud_status)
    app.router.add_post("/api/experimental/web_search", _web_proxy("/api/web_search", "web search is unavailable"))
    app.router.add_post("/api/experimental/web_fetch", _web_proxy("/api/web_fetch", "web fetch is unavailable"))
    app.router.add_post("/api/me", whoami)
    app.router.add_post("/api/signout", signout)
    app.router.add_delete("/api/user/keys/{encodedKey}", signout)
