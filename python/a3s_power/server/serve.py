"""Running the server: the store, the scheduler and the app on OLLAMA_HOST, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from ..config import Config
from ..core import _core
from ..store import ModelStore
from ..usage import UsageLog
from ..hosts import parse_host
from ..engine.scheduler import Scheduler
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
    state = build_state(config)
    state.loopback_only = is_loopback(bind_host)
    runner = make_runner(create_app(state), config)
    await runner.setup()
    site = web.TCPSite(runner, bind_host, bind_port)
    await site.start()
    log.info("listening on %s:%d", bind_host, bind_port)
    print(f"A3S Power is listening on {bind_host}:{bind_port}", flush=True)
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
