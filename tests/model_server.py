"""A real A3S Power HTTP server for tests: the full app on 127.0.0.1 (random port), on its own event
loop in a thread, over a model store in a temporary folder."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from a3s_power.config import Config
from a3s_power.engine.scheduler import Scheduler
from a3s_power.registry.settings import TransferSettings
from a3s_power.server import models as model_routes
from a3s_power.server.app import ServerState, create_app
from a3s_power.store import ModelStore


class ServerThread:
    def __init__(self, home: Path, settings: TransferSettings | None = None, usage=None, **config) -> None:
        # No disk tier for the prompt cache unless a test asks (see tests/conftest.py _isolate_environment).
        self.config = Config(**{"home": home, "num_parallel": 1, "context_length": 512, "prompt_cache_disk_mb": 0,
                                **config})
        self.usage = usage  # a UsageLog for /v1/usage, else none
        self.store = ModelStore.from_config(self.config)
        self.settings = settings
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the test server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(20)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    def make_runner(self, app: web.Application) -> web.AppRunner:
        return web.AppRunner(app, access_log=None)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        state = ServerState(config=self.config, scheduler=Scheduler(self.config, self.store.resolve), store=self.store,
                            usage=self.usage)
        app = create_app(state)
        if self.settings is not None:
            app[model_routes.SETTINGS] = self.settings
        runner = self.make_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
