"""A real A3S Power server on 127.0.0.1 for tests, running in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from aiohttp import web

from a3s_power.config import Config
from a3s_power.engine.scheduler import Scheduler
from a3s_power.server.app import ServerState, create_app


class RunningServer:
    def __init__(self, config: Config, resolve, store=None, usage=None) -> None:
        self.config = config
        self._resolve = resolve
        self._store = store
        self._usage = usage
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.state: ServerState | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self.state = ServerState(config=self.config, scheduler=Scheduler(self.config, self._resolve),
                                 store=self._store, usage=self._usage)
        self._runner = web.AppRunner(create_app(self.state), handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> RunningServer:
        self._thread.start()
        self._ready.wait(30)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    def stop(self) -> None:
        async def shutdown():
            await self._runner.cleanup()

        self.call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def server_config(**changes) -> Config:
    base = Config.from_env()
    return replace(base, **changes) if hasattr(base, "__dataclass_fields__") else base.model_copy(update=changes)


def resolver(**paths: str):
    """A name-to-model lookup over GGUF files, for servers that need no store: each name maps to
    a completion model (``smollm2`` and ``smollm2:latest`` alike)."""
    from pathlib import Path

    from a3s_power.store.types import LocalModel, ModelNotFound

    models = {f"{name}:latest": LocalModel(name=f"{name}:latest", model_path=Path(path), capabilities=["completion"])
              for name, path in paths.items()}

    def resolve(name: str) -> LocalModel:
        key = name if ":" in name else name + ":latest"
        if key not in models:
            raise ModelNotFound(name)
        return models[key]

    return resolve
