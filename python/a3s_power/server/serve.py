"""Running the server: the store, the scheduler and the app on OLLAMA_HOST, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys

from aiohttp import web

from ..config import Config
from ..core import _core
from ..engine.scheduler import Scheduler
from ..errors import InvalidOptionError
from ..hosts import parse_host
from ..store import ModelStore
from ..usage import UsageLog
from .app import create_app
from .state import ServerState, is_loopback

log = logging.getLogger(__name__)

def make_runner(app: web.Application, config: Config) -> web.AppRunner:
    """The app's runner with the server's connection settings. aiohttp's ``keepalive_timeout`` is
    the header timeout: it runs from when a connection opens and again from the end of each
    response, and closes the connection only while it waits for (the rest of) a request's headers,
    never while a handler runs."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=config.header_timeout_s)


def bind_address(host: str) -> tuple[str, int]:
    """Where to listen: OLLAMA_HOST read as Ollama reads it (hosts.py)."""
    parsed = parse_host(host)
    return parsed.host, parsed.port


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_cert`` and ``tls_key``; None (plain HTTP) without them."""
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise InvalidOptionError("HTTPS needs both a certificate and its key: A3S_POWER_TLS_CERT and "
                                 "A3S_POWER_TLS_KEY (or serve --tls-cert and --tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidOptionError(f"cannot load the TLS certificate {config.tls_cert} with key {config.tls_key}: "
                                 f"{exc.strerror or exc}") from None
    return context


def warn_if_open(bind_host: str, keys: tuple[str, ...]) -> None:
    """A listener other than loopback without API keys serves every route to whoever reaches it."""
    if keys or is_loopback(bind_host):
        return
    log.warning("listening on %s without an API key: anyone who can reach this port can run, pull and delete "
                "models. Set A3S_POWER_API_KEY (README: API keys and TLS) or listen on 127.0.0.1",
                bind_host or "every address")


def build_state(config: Config) -> ServerState:
    store = ModelStore.from_config(config)
    return ServerState(config=config, scheduler=Scheduler(config, store.resolve, isolate=config.model_workers),
                       store=store,
                       usage=UsageLog(config.home / "usage.db"))


async def serve(config: Config, host: str | None = None, port: int | None = None) -> None:
    bind_host, bind_port = bind_address(config.host)
    bind_host = host or bind_host
    bind_port = port if port is not None else bind_port
    if config.debug:
        _core.set_log_level(3 if config.debug > 1 else 2)  # llama.cpp's own log, on stderr
    if config.tmpdir is not None:
        import tempfile

        config.tmpdir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(config.tmpdir)
    # Requests are prepared (templates, tokens) on worker threads; a thread holding the GIL gives
    # it to the event loop after at most this long, instead of Python's default 5 ms.
    sys.setswitchinterval(0.001)
    ssl_context = tls_context(config)
    warn_if_open(bind_host, config.api_key_list())
    state = build_state(config)
    state.loopback_only = is_loopback(bind_host)
    runner = make_runner(create_app(state), config)
    await runner.setup()
    site = web.TCPSite(runner, bind_host, bind_port, ssl_context=ssl_context)
    await site.start()
    over = " over HTTPS" if ssl_context is not None else ""
    log.info("listening on %s:%d%s", bind_host, bind_port, over)
    print(f"A3S Power is listening on {bind_host}:{bind_port}{over}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
