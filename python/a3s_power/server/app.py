"""The aiohttp application: shared state, middleware and the route tables of each API."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from fnmatch import fnmatchcase

from aiohttp import web

from ..engine.service import InferenceService
from ..store.types import LocalModel
from ..version import __version__
from . import account, anthropic, models, native, openai, ops, rerank, responses, slots, tokens, ui
from .access import key_middleware
from .errors import error_middleware
from .metrics import Metrics
from .state import STATE, ServerState, state_of

__all__ = ["STATE", "ServerState", "create_app", "local_model_resolver", "state_of"]

log = logging.getLogger(__name__)

_ALWAYS_ALLOWED_ORIGINS = [
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]

_CORS_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                 "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, "
                 "x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, "
                 "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout, "
                 "anthropic-version, anthropic-beta, x-api-key")


def _origin_allowed(origin: str, extra: tuple[str, ...]) -> bool:
    return any(fnmatchcase(origin, pattern) for pattern in (*_ALWAYS_ALLOWED_ORIGINS, *extra))


def _same_origin(origin: str, host_header: str) -> bool:
    """A page of the server's own origin (gin-contrib/cors lets it through as no CORS request)."""
    return bool(host_header) and origin in (f"http://{host_header}", f"https://{host_header}")


def _host_is_local(host_header: str) -> bool:
    """Ollama's DNS-rebinding guard: which Host headers a loopback listener answers."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local
    except ValueError:
        pass
    return host == socket.gethostname().lower()


def _edge_middleware(state_getter: Callable[[], ServerState]):
    """Host and Origin checks in front of every route, as Ollama's: a foreign Host on a loopback
    listener and an Origin that is not allowed are answered 403 before any handler runs. A web page
    can send "simple" requests (text/plain POSTs, say) without a preflight, so withholding the
    Access-Control-Allow-Origin header alone would still let it start a copy, pull or generation.
    Requests without Origin (curl, SDKs) and from the server's own origin are no CORS requests."""

    @web.middleware
    async def edge(request: web.Request, handler):
        state = state_getter()
        host = request.headers.get("Host", "")
        if state.loopback_only and not _host_is_local(host):
            return web.Response(status=403)
        origin = request.headers.get("Origin")
        cross = bool(origin) and not _same_origin(origin, host)
        if cross and not _origin_allowed(origin, state.config.origins):
            log.info("refused %s %s from origin %r (not in OLLAMA_ORIGINS)", request.method, request.path, origin)
            return web.Response(status=403)
        if cross:
            request[_ALLOWED_ORIGIN] = origin  # written by _on_prepare, streams included
        if request.method == "OPTIONS":
            response = web.Response(status=204)
            if cross:
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "43200"
            return response
        return await handler(request)

    return edge


# aiohttp >= 3.12 types request storage keys; older ones take a string.
_ALLOWED_ORIGIN = web.RequestKey("allowed_origin", str) if hasattr(web, "RequestKey") else "allowed_origin"
_SERVER_HEADER = f"a3s-power/{__version__}"


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response carries, set as its headers go out: a streamed answer sends them
    before its handler returns, so a middleware that adds them afterwards is too late for it."""
    response.headers["Server"] = _SERVER_HEADER
    origin = request.get(_ALLOWED_ORIGIN)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


def create_app(state: ServerState) -> web.Application:
    if state.metrics is None:
        state.metrics = Metrics()
        state.metrics.attach_scheduler(state.scheduler)
    observer = ops.Observer(state, state.metrics, state.usage)
    state.scheduler.events = observer
    state.service = InferenceService(state.scheduler, observer)

    middlewares = [_edge_middleware(lambda: state), state.metrics.middleware()]
    if keys := state.config.api_key_list():  # refused requests are still counted in /metrics
        middlewares.append(key_middleware(keys))
    # JSON bodies stop at the configured size (errors.read_json); blob uploads stream to disk unbounded.
    app = web.Application(client_max_size=state.config.max_body_mb * 1024 * 1024,
                          middlewares=[*middlewares, error_middleware])
    app[STATE] = state
    native.setup(app)
    openai.setup(app)
    anthropic.setup(app)
    responses.setup(app)
    rerank.setup(app)
    tokens.setup(app)  # tokenize and detokenize
    slots.setup(app)  # /api/slots
    ops.setup(app)
    account.setup(app)
    models.setup(app)  # the model store's routes (pull, push, create, ...)
    ui.setup(app)  # the web page at /ui

    async def on_shutdown(app: web.Application) -> None:
        await state.scheduler.close()

    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(on_shutdown)
    return app


def local_model_resolver(store) -> Callable[[str], LocalModel]:
    return store.resolve
