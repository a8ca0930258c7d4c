"""A3S Power inside your own program: the model store, the scheduler and the engine that the server
runs, without HTTP. Requests and answers are the types of ``a3s_power.api``.

``AsyncPower`` is for asyncio programs; ``Power`` offers the same methods to plain code, running
the engine on an event loop of its own in a background thread. Either way one scheduler serves
every caller: requests from several tasks or threads are batched together into the same model's
slots, as the server batches its clients. Leaving a stream's loop early cancels its request and
frees its slot.

    from a3s_power import Power

    with Power() as power:
        power.pull("smollm2:135m")
        answer = power.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Hi!"}])
        print(answer.message.content)

docs/api.md is the reference, with examples (examples/).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from .api import (
    ChatRequest,
    ChatResponse,
    Delta,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ModelInfo,
    RerankRequest,
    RerankResponse,
)
from .config import Config
from .engine.scheduler import Scheduler
from .engine.service import InferenceService
from .registry.builtin import BuiltinRegistry
from .registry.direct import name_for_url
from .registry.pull import is_url, pull_model
from .server.images import fetch_remote_images, is_remote
from .store.capabilities import derive as derive_capabilities
from .store.details import details_from_gguf
from .store.gguf import read_gguf
from .store.store import ModelStore
from .store.types import LocalModel, ModelNotFound

__all__ = ["AsyncPower", "Power"]

R = TypeVar("R")


def _request(kind: type[R], request: R | None, fields: dict[str, Any]) -> R:
    """A request given whole, or by its fields as keywords."""
    if request is not None:
        if fields:
            raise TypeError(f"give a {kind.__name__} or its fields as keywords, not both")
        if not isinstance(request, kind):
            raise TypeError(f"expected a {kind.__name__}, got {type(request).__name__}")
        return request
    return kind(**fields)  # type: ignore[call-arg]


def _info(spec: LocalModel) -> ModelInfo:
    return ModelInfo(name=spec.name, size=spec.size, digest=spec.digest, modified_at=spec.modified_at,
                     details={k: v for k, v in spec.details.items() if k != "parent_model"},
                     capabilities=list(spec.capabilities))


def _file_model(path: Path, name: str, projector: Path | None) -> LocalModel:
    """A GGUF file as a model: capabilities from its header and chat template, as the store derives them."""
    header = read_gguf(path, max_array=0, check_size=False)
    details = details_from_gguf(header)
    capabilities = derive_capabilities(header.metadata, header.metadata.get("tokenizer.chat_template"),
                                       has_projector=projector is not None, family=details.get("family", ""))
    return LocalModel(name=name, model_path=path, size=path.stat().st_size, details=details,
                      capabilities=capabilities, projector_path=projector)


class AsyncPower:
    """The engine in this process, for asyncio code. Make it, and use it, on one event loop.

    ``models_dir`` is the model store (default: ``$OLLAMA_MODELS``, else ``$A3S_POWER_HOME/models``);
    ``settings`` override the configuration read from ``config.toml`` and the environment (any
    field of ``a3s_power.config.Config``: ``num_parallel``, ``context_length``, ``keep_alive``, ...)."""

    def __init__(self, *, models_dir: str | os.PathLike | None = None, config: Config | None = None,
                 **settings: Any) -> None:
        config = config or Config.from_env()
        if models_dir is not None:
            settings["models_dir"] = Path(models_dir)
        self.config = config.model_copy(update=settings) if settings else config
        self.store = ModelStore.from_config(self.config)
        self._files: dict[str, LocalModel] = {}  # models loaded by path, by name
        self.scheduler = Scheduler(self.config, self._resolve)
        self.service = InferenceService(self.scheduler)

    def _resolve(self, name: str) -> LocalModel:
        if name in self._files:
            return self._files[name]
        if name.endswith(".gguf") and Path(name).is_file():  # a path named directly: its own name
            self._files[name] = _file_model(Path(name), name, None)
            return self._files[name]
        return self.store.resolve(name)

    # --- the store ----------------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        """The models in the store, newest first, then those loaded from files."""
        return [_info(m) for m in self.store.list_models()] + [_info(m) for m in self._files.values()]

    def show(self, name: str) -> ModelInfo:
        return _info(self._resolve(name))

    async def pull(self, name: str, *, insecure: bool = False,
                   progress: Callable[[dict], None] | None = None) -> ModelInfo:
        """Pulls a model into the store as ``a3s-power pull`` does (an Ollama-protocol registry,
        ``hf.co/...``, a URL, or the built-in registry of known models when the registry cannot be
        reached); ``progress`` hears each progress line (``status``, ``completed``, ``total``)."""
        builtin = BuiltinRegistry.load(self.config.home / "known_models.json")
        async for line in pull_model(self.store, name, insecure=insecure, builtin=builtin):
            if progress is not None:
                progress(line)
        return _info(self.store.resolve(name_for_url(name).display if is_url(name) else name))

    async def load(self, model: str | os.PathLike, *, name: str | None = None,
                   projector: str | os.PathLike | None = None, options: Any = None,
                   keep_alive: Any = None) -> ModelInfo:
        """Loads a model now rather than on its first request: a name in the store, or the path of
        a GGUF file (with ``projector``, its vision projector), then known as ``name`` (by default
        the file's name without ``.gguf``). ``options`` are load-time options (``num_ctx``, ...)."""
        path = Path(model)
        if isinstance(model, os.PathLike) or (str(model).endswith(".gguf") and path.is_file()):
            if not path.is_file():
                raise ModelNotFound(str(model))
            name = name or path.name.removesuffix(".gguf")
            self._files[name] = _file_model(path, name, Path(projector) if projector else None)
        else:
            name = str(model)
        spec = self._resolve(name)
        request_fields = {"model": name, "options": options, "keep_alive": keep_alive}
        if "embedding" in spec.capabilities or "rerank" in spec.capabilities:  # both run an embedding engine
            await self.service.embed(EmbedRequest(**request_fields))
        else:
            async for _ in self.service.generate(GenerateRequest(**request_fields)):
                pass
        return _info(spec)

    async def unload(self, name: str) -> bool:
        return await self.scheduler.unload(self._resolve(name).name)

    def running(self) -> builtins.list[str]:  # list: the method above
        """The names of the models loaded now."""
        return sorted({r.name for r in self.scheduler.running()})

    # --- inference ----------------------------------------------------------------------------

    async def _fetched(self, request: ChatRequest) -> ChatRequest:
        """Image URLs fetched as the server fetches them (public addresses only, unless allowed)."""
        if any(isinstance(i, str) and is_remote(i) for m in request.messages for i in (m.images or ())):
            request = request.model_copy(deep=True)
            await fetch_remote_images(request.messages, allow_private=self.config.allow_private_image_urls)
        return request

    async def stream_chat(self, request: ChatRequest | None = None, /, **fields: Any) -> AsyncIterator[Delta]:
        """The answer as it is made; the last delta has ``done`` and the metrics."""
        request = await self._fetched(_request(ChatRequest, request, fields))
        async for delta in self.service.chat(request):
            yield delta

    async def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> ChatResponse:
        """A whole answer: ``ChatRequest`` by itself or its fields as keywords (``model``,
        ``messages``, ``tools``, ``think``, ``format``, ``options``, ...)."""
        request = _request(ChatRequest, request, fields)
        return ChatResponse.from_deltas(request.model, [d async for d in self.stream_chat(request)])

    async def stream_generate(self, request: GenerateRequest | None = None, /, **fields: Any
                              ) -> AsyncIterator[Delta]:
        async for delta in self.service.generate(_request(GenerateRequest, request, fields)):
            yield delta

    async def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> GenerateResponse:
        """A completion of ``prompt`` (through the model's template unless ``raw``)."""
        request = _request(GenerateRequest, request, fields)
        return GenerateResponse.from_deltas(request.model, [d async for d in self.stream_generate(request)])

    async def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        """Embeddings of ``input`` (one text or a list), unit length unless ``normalize`` is false."""
        return await self.service.embed(_request(EmbedRequest, request, fields))

    async def rerank(self, request: RerankRequest | None = None, /, **fields: Any) -> RerankResponse:
        """``documents`` ordered by relevance to ``query`` by a reranker, most relevant first."""
        return await self.service.rerank(_request(RerankRequest, request, fields))

    async def close(self) -> None:
        """Unloads every model."""
        await self.scheduler.close()

    async def __aenter__(self) -> AsyncPower:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Power:
    """The engine in this process, for plain code: the methods of ``AsyncPower``, each waiting for
    its answer, and the streams as plain iterators. Safe to call from several threads at once."""

    def __init__(self, *, models_dir: str | os.PathLike | None = None, config: Config | None = None,
                 **settings: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="a3s-power", daemon=True)
        self._thread.start()

        async def make() -> AsyncPower:  # made on its loop, where the scheduler's tasks will run
            return AsyncPower(models_dir=models_dir, config=config, **settings)

        self.aio = self._wait(make())

    def _wait(self, coroutine: Awaitable[R]) -> R:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except BaseException:  # Ctrl-C while waiting: the request stops too
            future.cancel()
            raise

    def _iterate(self, stream: AsyncIterator[R]) -> Iterator[R]:
        """An async stream as a plain iterator; closing it (leaving its loop) closes the stream,
        which cancels the request."""
        try:
            while True:
                try:
                    yield self._wait(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._wait(stream.aclose())  # type: ignore[attr-defined]

    @property
    def config(self) -> Config:
        return self.aio.config

    def list(self) -> list[ModelInfo]:
        return self.aio.list()

    def show(self, name: str) -> ModelInfo:
        return self.aio.show(name)

    def pull(self, name: str, *, insecure: bool = False, progress: Callable[[dict], None] | None = None) -> ModelInfo:
        return self._wait(self.aio.pull(name, insecure=insecure, progress=progress))

    def load(self, model: str | os.PathLike, **kwargs: Any) -> ModelInfo:
        return self._wait(self.aio.load(model, **kwargs))

    def unload(self, name: str) -> bool:
        return self._wait(self.aio.unload(name))

    def running(self) -> builtins.list[str]:  # list: the method above
        return self.aio.running()

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> ChatResponse:
        return self._wait(self.aio.chat(request, **fields))

    def stream_chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Iterator[Delta]:
        return self._iterate(self.aio.stream_chat(_request(ChatRequest, request, fields)))

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> GenerateResponse:
        return self._wait(self.aio.generate(request, **fields))

    def stream_generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Iterator[Delta]:
        return self._iterate(self.aio.stream_generate(_request(GenerateRequest, request, fields)))

    def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        return self._wait(self.aio.embed(request, **fields))

    def rerank(self, request: RerankRequest | None = None, /, **fields: Any) -> RerankResponse:
        return self._wait(self.aio.rerank(request, **fields))

    def close(self) -> None:
        """Unloads every model and stops the engine's thread."""
        if self._loop.is_closed():
            return
        self._wait(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Power:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
