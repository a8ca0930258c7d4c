"""Which models are loaded, for how long, and with which load-time options.

A request asks for a model by name; the scheduler loads it (once, however many requests arrive
together), reloads it when the request needs other load-time options, keeps it for its keep-alive
after the last request and evicts the least recently used idle model when too many are loaded or
the new one does not fit. Each load is placed on the GPUs (placement.py) by their free memory and
what the models loaded here hold. Loading runs in a worker thread: the C++ core releases the GIL,
so the event loop stays free. With ``isolate`` (the server's default), each model's weights and
engines live in a worker process of their own (isolated.py): a crash there ends that model's
requests and runners, and the next request loads it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..config import Config
from ..errors import A3SPowerError, InvalidOptionError, ModelLoadError
from ..gpu import GpuInfo, gpu_stats
from ..store import dialect, prompt_cache
from ..store.types import LocalModel
from ..timefmt import FOREVER, parse_keep_alive
from .memory import Estimate
from .options import LoadOptions
from .placement import Placement, alongside, fewer_layers, place, promised, ran_out_of_memory
from .isolated import ModelWorker, WorkerModel
from .runner import LoadedModel

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Runner:
    """One loaded model and its bookkeeping."""

    spec: LocalModel
    model: LoadedModel | WorkerModel
    load_options: LoadOptions
    keep_alive: float  # seconds; negative = forever
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: datetime | None = None  # None while requests are running or forever
    memory: int = 0  # estimated bytes: weights, KV cache and compute buffers
    placement: Placement | None = None  # where it went; None where no GPU inventory is known
    # What loading it took on each GPU, measured (device number: bytes); None where not measured
    # (no GPU inventory, or weights shared with a model loaded before).
    vram_measured: dict[int, int] | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> tuple[str, bool]:
        return runner_key(self.spec.name, self.load_options)


def runner_key(name: str, load: LoadOptions) -> tuple[str, bool]:
    """A model serves generation and embeddings from two runners over the same weights (shared
    through the scheduler's bases), so that mixing the two never reloads the model, as Ollama
    serves both from one loaded model."""
    return name, load.embedding


class QueueFull(A3SPowerError):
    """More requests wait than OLLAMA_MAX_QUEUE allows."""

    http_status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class Scheduler:
    def __init__(self, config: Config, resolve: Callable[[str], LocalModel], events: Any = None,
                 gpus: Callable[[], list[GpuInfo]] | None = None, isolate: bool = False) -> None:
        """``events``, if given, hears ``on_load(name, seconds)`` and ``on_eviction(name)``.
        ``gpus`` lists the GPUs to place models on, read before each placement (by default the
        CUDA devices NVML reports, when this llama.cpp build can offload). ``isolate`` runs each
        model in a worker process (the server's ``model_workers`` setting); by default models run
        in this process, as for programs that embed the engine."""
        self._config = config
        self._isolate = isolate
        self._gpus = gpus or cuda_devices
        self.events = events
        self._resolve = resolve
        self._runners: dict[tuple[str, bool], Runner] = {}  # by runner_key
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False
        self._inflight = 0
        # Base weights shared by every runner over the same file and load-time model options
        # (models that differ only in adapters, template or parameters): [weights, users], the
        # weights a _core.Model, or the ModelWorker holding them.
        self._bases: dict[tuple, list] = {}
        # Placements of loads in flight, (weights key, placement) by name: promised before allocated.
        self._placing: dict[str, tuple[tuple, Placement]] = {}
        # Loads onto GPUs go one at a time, so that what each took can be read off the devices.
        self._gpu_loading = asyncio.Lock()

    # --- public ----------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    def resolve(self, name: str) -> LocalModel:
        return self._resolve(name)

    def running(self) -> list[Runner]:
        return list(self._runners.values())

    @asynccontextmanager
    async def use(self, spec: LocalModel, load: LoadOptions, keep_alive: float | None) -> AsyncIterator[Runner]:
        """Holds a loaded model for the duration of one request."""
        # Requests beyond the slots of every model that could be loaded wait in a queue that
        # OLLAMA_MAX_QUEUE bounds, as Ollama's scheduler does.
        capacity = self._config.max_queue + self._config.num_parallel * max(self._config.max_loaded_models, 1)
        if self._inflight >= capacity:
            raise QueueFull()
        self._inflight += 1
        try:
            runner = await self._acquire(spec, load, keep_alive)
            try:
                yield runner
            finally:
                self._release(runner)
        finally:
            self._inflight -= 1

    async def load(self, spec: LocalModel, load: LoadOptions, keep_alive: float | None) -> Runner:
        """Loads (or refreshes) a model without running anything: an empty prompt's request."""
        async with self.use(spec, load, keep_alive) as runner:
            return runner

    async def unload(self, name: str) -> bool:
        """Unloads every runner of model ``name`` (generation and embeddings)."""
        runners = [r for r in self._runners.values() if r.name == name]
        if not runners:
            return False
        async with self._lock(name):
            for runner in runners:
                await self._unload(runner, wait=True)
        return True

    async def close(self) -> None:
        self._closed = True
        for runner in list(self._runners.values()):
            await self._unload(runner, wait=False)

    # --- internals -------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _default_keep_alive(self) -> float:
        return self._config.keep_alive

    async def _acquire(self, spec: LocalModel, load: LoadOptions, keep_alive: float | None) -> Runner:
        if self._closed:
            raise A3SPowerError("the server is shutting down")
        if spec.remote_host:
            raise InvalidOptionError(f'"{spec.name}" is a remote model: only chat and generate reach it')
        if spec.translation is not None:  # Ollama's own GGUF dialect: translated once, then loaded
            async with self._lock(f"translate:{spec.model_digest}"):
                try:
                    spec = await asyncio.to_thread(dialect.loadable, spec)
                except dialect.UnsupportedDialect as exc:
                    raise ModelLoadError(str(exc)) from None
        key = runner_key(spec.name, load)
        async with self._lock(spec.name):
            runner = self._runners.get(key)
            if runner is not None and not _alive(runner.model):  # died just now: not heard of yet
                self._worker_ended(runner.model.worker)
                runner = None
            if runner is not None and not self._fits(runner, spec, load):
                log.info("reloading %s with new load options", spec.name)
                await self._unload(runner, wait=True)
                runner = None
            if runner is None:
                est = await asyncio.to_thread(self._estimate, spec, load)
                placement = await self._make_room(spec, load, est)
                started = time.perf_counter_ns()
                model, placement, measured = await self._load_placed(spec, load, est, placement)
                model.load_duration_ns = time.perf_counter_ns() - started
                runner = Runner(spec, model, load, keep_alive if keep_alive is not None else self._default_keep_alive(),
                                memory=placement.total if placement else est.total, placement=placement,
                                vram_measured=measured)
                self._runners[key] = runner
                log.info("loaded %s in %.2fs", spec.name, model.load_duration_ns / 1e9)
                if self.events is not None:
                    self.events.on_load(spec.name, model.load_duration_ns / 1e9)
            elif keep_alive is not None:
                runner.keep_alive = keep_alive
            runner.active += 1
            runner._idle.clear()
            runner.last_used = time.monotonic()
            runner.expires_at = None
            if runner._timer:
                runner._timer.cancel()
                runner._timer = None
            return runner

    async def _load_placed(self, spec: LocalModel, load: LoadOptions, est: Estimate, placement: Placement | None
                           ) -> tuple[LoadedModel | WorkerModel, Placement | None, dict[int, int] | None]:
        """Loads ``spec`` where ``placement`` says. A load that runs out of GPU memory is tried
        again with fewer layers on the GPUs, down to none, instead of failing. Returns the model,
        where it went, and what it took on each GPU when that could be measured."""
        placed = placement.apply(load) if placement is not None else load
        while True:
            if placement is not None:
                log.info("placing %s: %s", spec.name, placement)
                self._placing[spec.name] = (self._base_key(spec, load), placement)
            try:
                if placement is None or not placement.gpus:
                    return await self._load_within_timeout(spec, load, placed), placement, None
                async with self._gpu_loading:
                    before = {g.index: g.memory_used for g in await asyncio.to_thread(self._gpus)}
                    model = await self._load_within_timeout(spec, load, placed)
                    after = await asyncio.to_thread(self._gpus)
                shared = self._bases.get(self._base_key(spec, load), [None, 0])[1] > 1
                measured = None if shared else {g.index: max(0, g.memory_used - before.get(g.index, g.memory_used))
                                                for g in after if g.index in {s.index for s in placement.gpus}}
                return model, placement, measured
            except ModelLoadError as exc:
                n = fewer_layers(placed.num_gpu, est) if placed.num_gpu != 0 and ran_out_of_memory(str(exc)) else None
                if n is None:
                    raise
                log.warning("%s ran out of GPU memory with %s layers offloaded; trying %d", spec.name,
                            "all" if placed.num_gpu < 0 else placed.num_gpu, n)
                if placement is not None:
                    retry = self._plan(spec, replace(load, num_gpu=n), est, await asyncio.to_thread(self._gpus))
                    if retry is None or not 0 <= retry.n_gpu_layers <= n:
                        raise  # the layers are where weights loaded before put them: nothing to give up
                    placement, placed = retry, retry.apply(load)
                else:
                    placed = replace(placed, num_gpu=n)
            finally:
                self._placing.pop(spec.name, None)

    async def _load_within_timeout(self, spec: LocalModel, load: LoadOptions, placed: LoadOptions
                                   ) -> LoadedModel | WorkerModel:
        """OLLAMA_LOAD_TIMEOUT: a load that takes longer is reported as failed; when it finishes
        after all, the model it made is closed again."""
        timeout = self._config.load_timeout
        task = asyncio.ensure_future(self._load(spec, load, placed))
        if timeout <= 0:
            return await task
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            def discard(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is None:
                    model = done.result()
                    model.close()
                    self._drop_base(self._base_key(spec, load), _weights_of(model))

            task.add_done_callback(discard)
            raise ModelLoadError(f"timed out waiting for {spec.name} to load after {timeout:g}s") from None

    async def _load(self, spec: LocalModel, load: LoadOptions, placed: LoadOptions) -> LoadedModel | WorkerModel:
        """Loads ``spec`` with ``placed``: the requested ``load`` with its placement applied."""
        key = self._base_key(spec, load)
        async with self._lock(f"base:{key}"):  # two models over one file must not both load it
            base = self._bases.get(key)
            if base is not None and isinstance(base[0], ModelWorker) and not base[0].alive:
                self._worker_ended(base[0])
                base = None
            if base is None:
                base = self._bases[key] = [await self._load_weights(spec, placed), 0]
            base[1] += 1
        try:
            adapters = [(str(p), 1.0) for p in spec.adapter_paths]
            projector = str(spec.projector_path) if spec.projector_path else None
            placed = await asyncio.to_thread(self._with_prompt_folder, spec, placed)
            if isinstance(base[0], ModelWorker):
                return await base[0].open(str(spec.model_path), placed, adapters, projector)
            return await asyncio.to_thread(LoadedModel, str(spec.model_path), placed, adapters, base[0], projector)
        except BaseException:
            self._drop_base(key, base[0])
            raise

    def _with_prompt_folder(self, spec: LocalModel, placed: LoadOptions) -> LoadOptions:
        """A generation engine's prompt cache gets its disk tier under the store."""
        disk_mb = self._config.prompt_cache_disk_mb
        if placed.embedding or placed.prompt_cache_mb <= 0 or disk_mb <= 0:
            return placed
        try:
            folder = prompt_cache.folder_for(self._config.models_root, Path(spec.model_path), spec.adapter_paths,
                                             spec.projector_path, kv_cache_type=placed.kv_cache_type,
                                             flash_attention=placed.flash_attention, kv_unified=placed.kv_unified)
        except OSError as exc:  # a read-only store: the cache stays in memory
            log.warning("prompt cache on disk unavailable: %s", exc)
            return placed
        return replace(placed, prompt_cache_dir=str(folder), prompt_cache_disk_mb=disk_mb)

    async def _load_weights(self, spec: LocalModel, placed: LoadOptions):
        """A model's weights: in this process, or in a worker process of their own."""
        if not self._isolate:
            from ..core import _core

            return await asyncio.to_thread(_core.Model, str(spec.model_path), placed.model_params())
        debug = self._config.debug
        worker = await ModelWorker.start(spec.name, str(spec.model_path), placed,
                                         (3 if debug > 1 else 2) if debug else None)
        worker.on_exit.append(self._worker_ended)
        return worker

    def _worker_ended(self, worker: ModelWorker) -> None:
        """A worker died (its requests have ended with why): its runners and weights are let go, so
        that the next request loads the model again; other models are untouched."""
        for key, base in list(self._bases.items()):
            if base[0] is worker:
                del self._bases[key]
        for runner in list(self._runners.values()):
            if _weights_of(runner.model) is worker:
                del self._runners[runner.key]
                if runner._timer:
                    runner._timer.cancel()
                log.info("dropped %s: its worker ended", runner.name)

    @staticmethod
    def _base_key(spec: LocalModel, load: LoadOptions) -> tuple:
        """Which loaded weights a model can share: the same file, loaded with the same options."""
        return str(spec.model_path), load.model_key()

    def _drop_base(self, key: tuple, weights: object) -> None:
        base = self._bases.get(key)
        if base is None or base[0] is not weights:  # let go already: its worker ended
            return
        base[1] -= 1
        if base[1] <= 0:
            del self._bases[key]
            base[0].close()

    @staticmethod
    def _fits(runner: Runner, spec: LocalModel, load: LoadOptions) -> bool:
        # A loaded model serves any request whose load-time options match; other sampling
        # options are per request.
        return (runner.spec.model_path == spec.model_path and runner.load_options == load
                and list(runner.spec.adapter_paths) == list(spec.adapter_paths))

    def _release(self, runner: Runner) -> None:
        runner.active -= 1
        runner.last_used = time.monotonic()
        if runner.active > 0:
            return
        runner._idle.set()
        if runner.keep_alive == 0:
            asyncio.get_running_loop().create_task(self._expire(runner))
        elif runner.keep_alive > 0:
            runner.expires_at = datetime.now(timezone.utc) + timedelta(seconds=runner.keep_alive)
            runner._timer = asyncio.get_running_loop().call_later(
                runner.keep_alive, lambda: asyncio.ensure_future(self._expire(runner)))
        else:
            runner.expires_at = None

    async def _expire(self, runner: Runner) -> None:
        async with self._lock(runner.name):
            if self._runners.get(runner.key) is runner and runner.active == 0:
                await self._unload(runner, wait=False)

    async def _unload(self, runner: Runner, *, wait: bool) -> None:
        if wait and runner.active > 0:
            await runner._idle.wait()
        if runner._timer:
            runner._timer.cancel()
        if self._runners.get(runner.key) is runner:
            del self._runners[runner.key]
        await asyncio.to_thread(runner.model.close)
        self._drop_base(self._base_key(runner.spec, runner.load_options), _weights_of(runner.model))
        log.info("unloaded %s", runner.name)

    @staticmethod
    def _estimate(spec: LocalModel, load: LoadOptions) -> Estimate:
        from .memory import estimate

        extra = [*spec.adapter_paths, *([spec.projector_path] if spec.projector_path else [])]
        try:
            return estimate(spec.model_path, load, extra)
        except Exception:  # noqa: BLE001 - an unreadable header fails the load itself, with its own message
            return Estimate(0, 0, 0)

    def _plan(self, spec: LocalModel, load: LoadOptions, est: Estimate, gpus: list[GpuInfo]) -> Placement | None:
        """Where the model would go now; None where there are no GPUs to place by (a CPU build, or
        devices whose memory cannot be read, as Apple's): llama.cpp then follows the options."""
        if not gpus:
            return None
        loaded = [(self._base_key(r.spec, r.load_options), r.placement) for r in self._runners.values()
                  if r.placement is not None]
        placed = loaded + list(self._placing.values())
        held, allocated = promised(placed), promised(loaded)
        accounts = {"promised": held, "loading": {i: held[i] - allocated.get(i, 0) for i in held},
                    "overhead": self._config.gpu_overhead}
        key = self._base_key(spec, load)
        base = next((p for k, p in placed if k == key), None)
        if base is not None:
            return alongside(base, est, gpus, **accounts)
        return place(est, gpus, load, spread=self._config.sched_spread, **accounts)

    async def _make_room(self, spec: LocalModel, load: LoadOptions, est: Estimate) -> Placement | None:
        """Evicts least recently used models (idle ones first) until the count limit allows one
        more and the new model fits: every layer it asks for on the GPUs, the rest in system memory.
        As in Ollama, a model that cannot have all its layers on the GPUs loads in part once nothing
        is left to evict. Returns its placement."""
        from .memory import available_memory, format_bytes

        limit = self._config.max_loaded_models
        caches_released = False
        while True:
            placement = self._plan(spec, load, est, await asyncio.to_thread(self._gpus))
            host = placement.cpu_bytes if placement is not None else est.total
            host_short = host > available_memory()
            # A model's embedding runner beside its generation runner is not another model.
            names = {r.name for r in self._runners.values()}
            over_limit = limit > 0 and len(names) >= limit and spec.name not in names
            short = (placement is not None and not placement.complete) or host_short
            if not self._runners or not (over_limit or short):
                break
            if host_short and not over_limit and not caches_released:
                # Saved conversations are a cache: they give way before a model does.
                caches_released = True
                runners = list(self._runners.values())
                freed = await asyncio.to_thread(lambda: sum(r.model.release_prompt_cache() for r in runners))
                if freed:
                    log.info("released %s of prompt caches to make room", format_bytes(freed))
                    continue
            idle = [r for r in self._runners.values() if r.active == 0]
            others = [r for r in (idle or self._runners.values()) if r.name != spec.name]
            victim = min(others or idle or self._runners.values(), key=lambda r: r.last_used)
            log.info("evicting %s to make room", victim.name)
            await self._unload(victim, wait=True)
            if self.events is not None:
                self.events.on_eviction(victim.name)
        free = available_memory()
        if host > free:
            raise ModelLoadError(f"model requires more system memory ({format_bytes(host)}) than is available "
                                 f"({format_bytes(free)})")
        return placement


def _alive(model: LoadedModel | WorkerModel) -> bool:
    return model.worker.alive if isinstance(model, WorkerModel) else True


def _weights_of(model: LoadedModel | WorkerModel) -> object:
    """The base weights a model runs over: its worker, or the _core.Model in this process."""
    return model.worker if isinstance(model, WorkerModel) else model.model


def cuda_devices() -> list[GpuInfo]:
    """The GPUs models are placed on: CUDA devices whose memory NVML reads, when this
    llama.cpp build can offload at all."""
    from ..core import _core

    if not _core.supports_gpu_offload():
        return []
    return [g for g in gpu_stats() if g.kind == "cuda" and g.memory_total > 0]


__all__ = ["FOREVER", "QueueFull", "Runner", "Scheduler", "parse_keep_alive"]
