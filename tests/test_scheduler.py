"""The scheduler: memory estimates, eviction under OLLAMA_MAX_LOADED_MODELS and memory pressure,
keep-alive, and reloads on new load-time options."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from a3s_power.api import EmbedRequest, GenerateRequest
from a3s_power.engine import memory
from a3s_power.engine.options import LoadOptions, parse_options
from a3s_power.engine.scheduler import Scheduler
from a3s_power.engine.service import InferenceService
from a3s_power.errors import ModelLoadError
from a3s_power.store.types import LocalModel
from tests.server_harness import server_config


def test_estimate_counts_weights_kv_cache_and_compute(smollm2_path):
    one = memory.estimate(smollm2_path, LoadOptions(num_ctx=1024, num_parallel=1))
    four = memory.estimate(smollm2_path, LoadOptions(num_ctx=1024, num_parallel=4))
    assert one.weights == Path(smollm2_path).stat().st_size
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, K and V in f16.
    assert one.kv_cache == 30 * 1024 * 3 * 128 * 2
    assert four.kv_cache == 4 * one.kv_cache
    q8 = memory.estimate(smollm2_path, LoadOptions(num_ctx=1024, num_parallel=1, kv_cache_type="q8_0"))
    assert q8.kv_cache < one.kv_cache


def _specs(smollm2_path, tiny_path):
    return {"a": LocalModel(name="a", model_path=Path(tiny_path)),
            "b": LocalModel(name="b", model_path=Path(smollm2_path)),
            "c": LocalModel(name="c", model_path=Path(tiny_path), system="another model over the same file")}


def test_max_loaded_models_evicts_the_least_recently_used(smollm2_path, tiny_path):
    specs = _specs(smollm2_path, tiny_path)
    evicted = []

    class Events:
        def on_load(self, name, seconds):
            pass

        def on_eviction(self, name):
            evicted.append(name)

    scheduler = Scheduler(server_config(max_loaded_models=2, num_parallel=1, context_length=256), specs.__getitem__,
                          Events())
    load = parse_options({"num_ctx": 256}).load

    async def main():
        await scheduler.load(specs["a"], load, None)
        await scheduler.load(specs["b"], load, None)
        await scheduler.load(specs["a"], load, None)  # a is now the most recently used
        await scheduler.load(specs["c"], load, None)
        names = sorted(r.name for r in scheduler.running())
        await scheduler.close()
        return names

    assert asyncio.run(main()) == ["a", "c"]
    assert evicted == ["b"]


def test_memory_pressure_evicts_and_an_impossible_model_is_refused(smollm2_path, tiny_path, monkeypatch):
    specs = _specs(smollm2_path, tiny_path)
    scheduler = Scheduler(server_config(max_loaded_models=5, num_parallel=1, context_length=256), specs.__getitem__)
    load = parse_options({"num_ctx": 256}).load
    tiny_need = memory.estimate(tiny_path, load).total
    smol_need = memory.estimate(smollm2_path, load).total

    async def main():
        await scheduler.load(specs["a"], load, None)
        # Pretend the machine has room for SmolLM2 only once "a" is gone.
        monkeypatch.setattr(memory, "available_memory",
                            lambda gpu=False: smol_need + 1 if not scheduler.running() else smol_need - 1)
        await scheduler.load(specs["b"], load, None)
        after = [r.name for r in scheduler.running()]
        monkeypatch.setattr(memory, "available_memory", lambda gpu=False: tiny_need - 1)
        with pytest.raises(ModelLoadError, match="more system memory"):
            await scheduler.load(specs["c"], load, None)
        await scheduler.close()
        return after

    assert asyncio.run(main()) == ["b"]


def test_prompt_caches_give_way_before_a_model_is_evicted(smollm2_path, tiny_path, monkeypatch):
    specs = _specs(smollm2_path, tiny_path)
    config = server_config(max_loaded_models=5, num_parallel=1, context_length=512)
    scheduler = Scheduler(config, specs.__getitem__)
    service = InferenceService(scheduler)
    load = parse_options({"num_ctx": 512}).load
    tiny_need = memory.estimate(tiny_path, load).total

    async def main():
        # Two conversations through the only slot: the first is kept in host memory.
        for prompt in ("Tell me about the sea. " * 20, "Something else entirely."):
            async for _ in service.generate(GenerateRequest(model="b", prompt=prompt, raw=True,
                                                               options={"num_ctx": 512, "num_predict": 2})):
                pass
        runner = next(iter(scheduler.running()))
        held = runner.model.engine.stats()["prompt_cache_bytes"]
        assert held > 0
        # Pretend the machine has room for one more model once those bytes are back.
        monkeypatch.setattr(memory, "available_memory", lambda gpu=False: tiny_need + 1 if
                            runner.model.engine.stats()["prompt_cache_bytes"] == 0 else tiny_need - 1)
        await scheduler.load(specs["a"], load, None)
        names = sorted(r.name for r in scheduler.running())
        await scheduler.close()
        return names

    assert asyncio.run(main()) == ["a", "b"]  # nothing evicted, the cache emptied instead


def test_keep_alive_zero_unloads_and_new_load_options_reload(tiny_path):
    specs = {"a": LocalModel(name="a", model_path=Path(tiny_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__)
    service = InferenceService(scheduler)

    async def main():
        first = await scheduler.load(specs["a"], parse_options({"num_ctx": 256}).load, 60)
        same = await scheduler.load(specs["a"], parse_options({"num_ctx": 256}).load, 60)
        other = await scheduler.load(specs["a"], parse_options({"num_ctx": 512}).load, 60)
        reloaded = other is not first and same is first
        async for _ in service.generate(GenerateRequest(model="a", prompt="hi", keep_alive=0,
                                                           options={"num_ctx": 512, "num_predict": 2})):
            pass
        await asyncio.sleep(0.2)
        left = [r.name for r in scheduler.running()]
        await scheduler.close()
        return reloaded, left

    reloaded, left = asyncio.run(main())
    assert reloaded and left == []


def test_load_timeout_reports_a_load_that_takes_too_long(tiny_path, monkeypatch):
    import time as _time

    from a3s_power.engine import runner as runner_module

    specs = {"a": LocalModel(name="a", model_path=Path(tiny_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256, load_timeout=0.2), specs.__getitem__)
    real_init = runner_module.LoadedModel.__init__

    def slow_init(self, *args, **kwargs):
        _time.sleep(1.0)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(runner_module.LoadedModel, "__init__", slow_init)

    async def main():
        with pytest.raises(ModelLoadError, match="timed out"):
            await scheduler.load(specs["a"], parse_options({"num_ctx": 256}).load, None)
        await asyncio.sleep(1.5)  # the late load finishes and is closed again
        return scheduler.running(), dict(scheduler._bases)

    running, bases = asyncio.run(main())
    assert running == [] and bases == {}


def test_environment_variables_reach_the_config(monkeypatch):
    from a3s_power.config import Config

    monkeypatch.setenv("OLLAMA_LOAD_TIMEOUT", "2m")
    monkeypatch.setenv("OLLAMA_GPU_OVERHEAD", "1073741824")
    monkeypatch.setenv("OLLAMA_SCHED_SPREAD", "1")
    monkeypatch.setenv("OLLAMA_MULTIUSER_CACHE", "true")
    monkeypatch.setenv("OLLAMA_REMOTES", "a.example, b.example")
    monkeypatch.setenv("OLLAMA_NOHISTORY", "1")
    monkeypatch.setenv("OLLAMA_TMPDIR", "/tmp/a3s-tmp")
    c = Config.from_env()
    assert (c.load_timeout, c.gpu_overhead, c.sched_spread, c.multiuser_cache) == (120.0, 1 << 30, True, True)
    assert c.remotes == ("a.example", "b.example") and c.nohistory and str(c.tmpdir) == "/tmp/a3s-tmp"
    from a3s_power.engine.options import defaults

    assert defaults(c).load.kv_unified is True


def test_embeddings_and_generation_on_one_model_never_reload_it(smollm2_path, tiny_path):
    """A model asked for embeddings between generations keeps both runners (sharing weights), as
    Ollama serves both from one loaded model; it counts as one model against the limit."""
    specs = _specs(smollm2_path, tiny_path)
    loads = []

    class Events:
        def on_load(self, name, seconds):
            loads.append(name)

        def on_eviction(self, name):
            pass

    scheduler = Scheduler(server_config(max_loaded_models=1, num_parallel=1, context_length=256), specs.__getitem__,
                          Events())
    service = InferenceService(scheduler)

    async def main():
        for _ in range(3):
            deltas = [d async for d in service.generate(GenerateRequest(
                model="b", prompt="Hello", options={"num_predict": 2, "num_ctx": 256}))]
            assert deltas[-1].done
            vectors = await service.embed(EmbedRequest(model="b", input=["Hello", "world"], options={"num_ctx": 256}))
            assert len(vectors.embeddings) == 2
        kinds = sorted((r.name, r.load_options.embedding) for r in scheduler.running())
        bases = len(scheduler._bases)
        assert await scheduler.unload("b")
        left = scheduler.running()
        await scheduler.close()
        return kinds, bases, left

    kinds, bases, left = asyncio.run(main())
    assert kinds == [("b", False), ("b", True)] and bases == 1  # one copy of the weights
    assert loads == ["b", "b"]  # each runner loaded once, whatever the order of requests
    assert left == []
