"""Ollama's model-management routes: pull, push, create, tags, show, copy, delete and blobs.

Progress routes stream NDJSON (``application/x-ndjson``) unless ``stream`` is false, when only
the last object is sent. A failure before the first line gets its real status and a JSON error;
one after it is a final ``{"error": ...}`` line, as Ollama does.

No error shows a path inside the store: a full disk is a 507 naming the store's folder, any other
file system failure its reason alone (the details go to the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..errors import A3SPowerError
from ..registry.builtin import BuiltinRegistry
from ..registry.pull import is_url, pull_model
from ..registry.push import push_model
from ..registry.settings import TransferSettings
from ..store import digests
from ..store.blobs import DigestMismatch
from ..store.create import CreateError, prepare_create, run_create
from ..store.manifest import InvalidManifest
from ..store.names import ModelName
from ..store.show import show_model
from ..store.store import ModelStore
from ..store.types import InvalidModelName, ModelNotFound
from ..timefmt import rfc3339
from .account import show_cloud_model
from .errors import ApiError, read_json, status_for
from .state import STATE, is_loopback, state_of
from .streaming import ndjson

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("transfer_settings", TransferSettings)
BUILTIN = web.AppKey("builtin_registry", dict)  # holds the BuiltinRegistry, loaded on first use


def _store(request: web.Request) -> ModelStore:
    store = state_of(request).store
    if not isinstance(store, ModelStore):
        raise ApiError(500, "this server has no model store")
    return store


def _settings(request: web.Request) -> TransferSettings:
    return request.app.get(SETTINGS) or TransferSettings()


def _builtin(request: web.Request) -> BuiltinRegistry:
    holder = request.app[BUILTIN]
    if "registry" not in holder:
        holder["registry"] = BuiltinRegistry.load(state_of(request).config.home / "known_models.json")
    return holder["registry"]


def _model_field(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")
    if not name or not isinstance(name, str):
        raise ApiError(400, "model is required")
    return name


def _parse(name: str) -> ModelName:
    try:
        return ModelName.parse(name)
    except InvalidModelName:
        raise ApiError(400, "invalid model name") from None


def _stream_flag(body: dict[str, Any]) -> bool:
    value = body.get("stream", True)
    return True if value is None else bool(value)


def _status_of(exc: BaseException, store: ModelStore | None = None) -> tuple[int, str]:
    status, message = status_for(exc, store.root if store is not None else None)
    if not isinstance(exc, (ApiError, A3SPowerError, OSError)):
        log.exception("unexpected failure", exc_info=exc)
    return status, message


def _raise_store_error(exc: OSError, store: ModelStore) -> None:
    status, message = _status_of(exc, store)
    raise ApiError(status, message) from None


async def _progress(request: web.Request, body: dict[str, Any], lines: AsyncIterator[dict]) -> web.StreamResponse:
    """Streams progress lines (or, with ``stream: false``, answers the last one)."""
    store = state_of(request).store
    store = store if isinstance(store, ModelStore) else None

    def describe(exc: BaseException) -> tuple[int, str]:
        return _status_of(exc, store)

    if _stream_flag(body):
        return await ndjson(request, lines, describe)
    last = None
    try:
        async for line in lines:
            last = line
    except Exception as exc:  # noqa: BLE001 - nothing sent yet: answer with the real status
        raise ApiError(*describe(exc)) from None
    return web.json_response(last or {})


# --- pull, push, create --------------------------------------------------------------------------

async def pull(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    name = _model_field(body)
    if not is_url(name):
        _parse(name)
    lines = pull_model(_store(request), name, insecure=bool(body.get("insecure")), settings=_settings(request),
                       builtin=_builtin(request))
    return await _progress(request, body, lines)


async def push(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    name = _model_field(body)
    _parse(name)
    store = _store(request)
    if store.find(name) is None:
        raise ApiError(404, f"model '{name}' not found")
    lines = push_model(store, name, insecure=bool(body.get("insecure")), settings=_settings(request))
    return await _progress(request, body, lines)


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    store = _store(request)
    try:  # ``from`` may name a folder of this machine only for a client on this machine
        plan = prepare_create(store, body, allow_folders=is_loopback(request.remote or ""))
    except CreateError as exc:
        raise ApiError(exc.status, str(exc)) from None

    def pull_parent(name: str):
        return pull_model(store, name, settings=_settings(request), builtin=_builtin(request))

    return await _progress(request, body, run_create(store, plan, pull=pull_parent))


# --- listing and inspecting ----------------------------------------------------------------------

def _details(details: dict[str, Any]) -> dict[str, Any]:
    out = {"parent_model": "", "format": "gguf", "family": "", "families": None, "parameter_size": "",
           "quantization_level": ""}
    out.update(details)
    return out


async def tags(request: web.Request) -> web.Response:
    store = _store(request)
    models = await asyncio.to_thread(store.list_models)
    return web.json_response({"models": [
        {"name": m.name, "model": m.name, "modified_at": rfc3339(m.modified_at) if m.modified_at else None,
         "size": m.size, "digest": m.digest, "details": _details(m.details),
         **({"remote_model": m.remote_model, "remote_host": m.remote_host} if m.remote_host else {}),
         **({"capabilities": m.capabilities} if m.capabilities else {})}  # Ollama >= 0.30; omitted when empty
        for m in models]})


async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = _model_field(body)
    _parse(name)
    store = _store(request)
    try:
        info = await asyncio.to_thread(show_model, store, name, verbose=bool(body.get("verbose")))
    except (ModelNotFound, InvalidManifest):
        info = await show_cloud_model(request, name, bool(body.get("verbose")))
        if info is None:
            raise ApiError(404, f"model '{name}' not found") from None
    if "details" in info:
        info["details"] = _details(info["details"])
    return web.json_response(info)


async def copy(request: web.Request) -> web.Response:
    body = await read_json(request)
    source, destination = body.get("source"), body.get("destination")
    if not source or not destination or not isinstance(source, str) or not isinstance(destination, str):
        raise ApiError(400, "source and destination are required")
    try:
        ModelName.parse(source)
    except InvalidModelName:
        raise ApiError(400, f'source "{source}" is invalid') from None
    try:
        ModelName.parse(destination)
    except InvalidModelName:
        raise ApiError(400, f'destination "{destination}" is invalid') from None
    store = _store(request)
    try:
        await asyncio.to_thread(store.copy, source, destination)
    except (ModelNotFound, InvalidManifest):
        raise ApiError(404, f'model "{source}" not found') from None
    except OSError as exc:
        _raise_store_error(exc, store)
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = _model_field(body)
    _parse(name)
    store = _store(request)
    stored = store.find(name)
    if stored is None:
        raise ApiError(404, f"model '{name}' not found")
    scheduler = state_of(request).scheduler
    if scheduler is not None:
        try:
            await scheduler.unload(stored.display)
        except Exception:  # an unload failure must not keep the model on disk
            log.exception("unloading %s before deleting it", stored.display)
    try:
        await asyncio.to_thread(store.delete, stored)
    except ModelNotFound:  # another delete removed it first
        raise ApiError(404, f"model '{name}' not found") from None
    except OSError as exc:
        _raise_store_error(exc, store)
    return web.Response(status=200)


# --- blobs -------------------------------------------------------------------------------------

def _digest(request: web.Request) -> str:
    raw = request.match_info["digest"]
    try:
        return digests.normalize(raw)
    except digests.InvalidDigest:
        raise ApiError(400, f"invalid digest format {raw!r}: expected sha256:<64 hex digits>") from None


async def head_blob(request: web.Request) -> web.Response:
    digest = _digest(request)
    if not _store(request).blobs.exists(digest):
        raise ApiError(404, f'blob "{digest}" not found')
    return web.Response(status=200)


async def create_blob(request: web.Request) -> web.Response:
    digest = _digest(request)
    store = _store(request)
    if store.blobs.exists(digest):
        return web.Response(status=200)
    try:
        created = await store.blobs.receive(request.content.iter_chunked(1 << 20), digest)
    except DigestMismatch as exc:
        raise ApiError(400, str(exc)) from None
    except OSError as exc:
        _raise_store_error(exc, store)
    return web.Response(status=201 if created else 200)


async def get_blob(request: web.Request) -> web.StreamResponse:
    digest = _digest(request)
    path = _store(request).blobs.path(digest)
    if not path.is_file():
        raise ApiError(404, f'blob "{digest}" not found')
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def delete_blob(request: web.Request) -> web.Response:
    digest = _digest(request)
    store = _store(request)
    if not store.blobs.exists(digest):
        raise ApiError(404, f'blob "{digest}" not found')
    if not store.remove_unused([digest]):
        raise ApiError(409, f'blob "{digest}" is used by a model')
    return web.Response(status=200)


# --- setup -------------------------------------------------------------------------------------

async def _startup(app: web.Application) -> None:
    store = app[STATE].store
    if isinstance(store, ModelStore):
        await asyncio.to_thread(store.startup)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/push", push)
    app.router.add_post("/api/create", create)
    app.router.add_get("/api/tags", tags)  # aiohttp answers HEAD for GET routes
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/copy", copy)
    app.router.add_delete("/api/delete", delete)
    app.router.add_head("/api/blobs/{digest}", head_blob)
    app.router.add_post("/api/blobs/{digest}", create_blob)
    app.router.add_get("/api/blobs/{digest}", get_blob, allow_head=False)
    app.router.add_delete("/api/blobs/{digest}", delete_blob)
    app[BUILTIN] = {}
    app.on_startup.append(_startup)
