"""Where models go on several GPUs: the placement rules, the scheduler applying them, /api/ps and
the CLI reporting them.

This machine has no GPU, so every test here gives the code a stand-in GPU inventory (a list of
GpuInfo, or a stand-in NVML binding). What llama.cpp then does with the parameters on real cards is
not covered here; on this CPU-only build it loads the model with them and ignores them."""

from __future__ import annotations

import asyncio
import functools
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner

from a3s_power.cli import models as cli_models
from a3s_power.config import Config, get_config
from a3s_power.core import _core
from a3s_power.engine import memory
from a3s_power.engine.memory import Estimate
from a3s_power.engine.options import LoadOptions, parse_options
from a3s_power.engine.placement import Placement, free_memory, place, promised
from a3s_power.engine.scheduler import Scheduler
from a3s_power.errors import InvalidOptionError
from a3s_power.gpu import GpuInfo, gpu_stats
from a3s_power.store.types import LocalModel
from tests import server_harness
from tests.server_harness import RunningServer, resolver, server_config

GiB = 1 << 30
# A 31-layer model (32 offloadable with the output layer): 8 GiB of weights, 2 GiB of KV cache.
MODEL = Estimate(weights=8 * GiB, kv_cache=2 * GiB, compute=1 * GiB, layers=31)


def gpu(index: int, free_gib: float, total_gib: float = 24) -> GpuInfo:
    return GpuInfo(f"cuda:{index} Test GPU", "cuda", int(total_gib * GiB), int((total_gib - free_gib) * GiB), 0.0,
                   index)


def layers(p: Placement) -> dict[int, int]:
    return {g.index: g.layers for g in p.gpus}


# --- the rules ---------------------------------------------------------------------------------


def test_a_model_that_fits_goes_whole_to_the_freest_gpu():
    p = place(MODEL, [gpu(0, 12), gpu(1, 20)], LoadOptions())
    assert (p.split_mode, p.main_gpu, p.n_gpu_layers, p.tensor_split) == ("none", 1, -1, ())
    assert layers(p) == {1: 32} and p.complete and p.cpu_bytes == 0
    assert p.vram >= MODEL.total


def test_a_second_model_goes_to_the_other_gpu_because_the_first_is_accounted():
    gpus = [gpu(0, 20), gpu(1, 16)]  # 4 GiB of GPU 0 used by another process
    first = place(MODEL, gpus, LoadOptions())
    held = promised([("first", first)])
    assert first.main_gpu == 0
    # Still loading: NVML does not show it yet, the promise counts.
    assert place(MODEL, gpus, LoadOptions(), promised=held, loading=held).main_gpu == 1
    # Loaded: NVML shows it, and it is not taken off a second time.
    shown = [gpu(0, 20 - first.vram / GiB), gpu(1, 16)]
    assert place(MODEL, shown, LoadOptions(), promised=held).main_gpu == 1
    assert free_memory(shown[0], promised=held[0]) == shown[0].memory_total - shown[0].memory_used


def test_free_memory_counts_each_model_once():
    card = gpu(0, 14)  # 10 GiB used, all of it a model this server loaded
    assert free_memory(card, promised=10 * GiB) == 14 * GiB
    assert free_memory(card, promised=12 * GiB) == 12 * GiB  # promised more than allocated so far
    assert free_memory(card, promised=14 * GiB, loading=4 * GiB) == 10 * GiB  # a second model in flight
    assert free_memory(card, overhead=GiB) == 13 * GiB


def test_models_over_the_same_weights_count_them_once():
    p = place(MODEL, [gpu(0, 20)], LoadOptions())
    share = p.gpus[0]
    assert promised([("file", p), ("file", p)]) == {0: 2 * share.bytes - share.weights}
    assert promised([("file", p), ("other", p)]) == {0: 2 * share.bytes}


def test_a_model_bigger_than_any_gpu_spreads_by_layer_in_proportion_to_free_memory():
    p = place(MODEL, [gpu(0, 9), gpu(1, 5)], LoadOptions())
    assert p.split_mode == "layer" and p.n_gpu_layers == -1 and p.complete
    assert sum(layers(p).values()) == 32 and layers(p)[0] > layers(p)[1] > 0
    # llama.cpp is given whole layer counts, so it puts on each GPU what was counted.
    assert p.tensor_split == (layers(p)[0], layers(p)[1])
    assert all(g.bytes <= free_memory(c) for g, c in zip(p.gpus, [gpu(0, 9), gpu(1, 5)]))


def test_sched_spread_always_splits_over_every_gpu():
    p = place(MODEL, [gpu(0, 20), gpu(1, 20)], LoadOptions(), spread=True)
    assert p.split_mode == "layer" and layers(p) == {0: 16, 1: 16}


def test_an_explicit_tensor_split_wins():
    p = place(MODEL, [gpu(0, 20), gpu(1, 20)], LoadOptions(tensor_split=(3.0, 1.0)))
    assert p.split_mode == "layer" and layers(p) == {0: 24, 1: 8} and p.tensor_split == (24.0, 8.0)
    row = place(MODEL, [gpu(0, 20), gpu(1, 20)], LoadOptions(tensor_split=(3.0, 1.0), split_mode="row"))
    assert row.split_mode == "row" and row.tensor_split == (3.0, 1.0)
    tensor = place(MODEL, [gpu(0, 20), gpu(1, 20)], LoadOptions(tensor_split=(3.0, 1.0), split_mode="tensor"))
    assert tensor.split_mode == "tensor" and tensor.tensor_split == (3.0, 1.0) and tensor.complete
    # Weights and KV cache in proportion, a compute buffer on each GPU.
    share = {g.index: g for g in tensor.gpus}
    assert share[0].weights == 3 * share[1].weights and share[0].bytes - share[1].bytes > 2 * share[1].weights
    with pytest.raises(InvalidOptionError, match="tensor_split"):
        place(MODEL, [gpu(0, 20)], LoadOptions(tensor_split=(0.0, 1.0)))


def test_an_explicit_main_gpu_pins_the_model():
    p = place(MODEL, [gpu(0, 12), gpu(1, 20)], LoadOptions(main_gpu=0))
    assert (p.split_mode, p.main_gpu, layers(p)) == ("none", 0, {0: 32})
    # Pinned where it does not fit whole: the rest stays on the CPU rather than spreading.
    small = place(MODEL, [gpu(0, 6), gpu(1, 20)], LoadOptions(main_gpu=0))
    assert small.split_mode == "none" and 0 < layers(small)[0] < 32 and not small.complete and small.cpu_bytes > 0
    with pytest.raises(InvalidOptionError, match="main_gpu"):
        place(MODEL, [gpu(0, 12)], LoadOptions(main_gpu=3))


def test_gpu_overhead_is_kept_free_on_each_gpu():
    gpus = [gpu(0, 8), gpu(1, 8)]
    roomy, tight = place(MODEL, gpus, LoadOptions()), place(MODEL, gpus, LoadOptions(), overhead=3 * GiB)
    assert roomy.complete and not tight.complete
    assert sum(layers(tight).values()) < 32 and all(g.bytes <= 5 * GiB for g in tight.gpus)


def test_a_model_too_big_for_every_gpu_is_offloaded_in_part():
    p = place(MODEL, [gpu(0, 4), gpu(1, 3)], LoadOptions())
    assert not p.complete and 0 < p.n_gpu_layers < 32 and p.n_gpu_layers == sum(layers(p).values())
    assert p.tensor_split == tuple(float(n) for n in layers(p).values()) and p.cpu_bytes > 0
    assert place(MODEL, [gpu(0, 0.5)], LoadOptions()) == Placement(0, cpu_bytes=MODEL.total, complete=False)


def test_num_gpu_zero_and_num_gpu_n():
    assert place(MODEL, [gpu(0, 20)], LoadOptions(num_gpu=0)) == Placement(0, cpu_bytes=MODEL.total)
    p = place(MODEL, [gpu(0, 20), gpu(1, 10)], LoadOptions(num_gpu=10))
    assert p.n_gpu_layers == 10 and layers(p) == {0: 10} and p.complete and p.cpu_bytes > 0


def test_placement_becomes_load_options():
    p = place(MODEL, [gpu(0, 9), gpu(1, 5)], LoadOptions())
    params = p.apply(LoadOptions()).model_params()
    assert (params.n_gpu_layers, params.split_mode, list(params.tensor_split)) == (-1, "layer", list(p.tensor_split))


# --- options and inventory ---------------------------------------------------------------------


def test_split_options_parse_and_reload_the_model():
    assert parse_options({"tensor_split": "3,1"}).load.tensor_split == (3.0, 1.0)
    assert parse_options({"tensor_split": [1, "2"]}).load.tensor_split == (1.0, 2.0)
    assert parse_options({"tensor_split": ["3,1"]}).load.tensor_split == (3.0, 1.0)  # a Modelfile PARAMETER
    assert parse_options({"split_mode": "row"}).load.split_mode == "row"
    for bad in ({"tensor_split": "a,b"}, {"tensor_split": "-1,1"}, {"tensor_split": "0,0"}, {"split_mode": "rows"},
                {"main_gpu": -2}):
        with pytest.raises(InvalidOptionError, match=next(iter(bad))):
            parse_options(bad)
    base = parse_options({}).load
    assert base.main_gpu == -1 and base.model_params().main_gpu == 0 and base.model_params().split_mode == "layer"
    assert parse_options({"tensor_split": "3,1"}).load.model_key() != base.model_key()


def test_config_main_gpu_is_unset_unless_given(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text("[gpu]\ngpu_layers = 10\n")
    assert Config.from_env().main_gpu == -1
    (tmp_path / "config.toml").write_text("[gpu]\nmain_gpu = 0\n")
    assert Config.from_env().main_gpu == 0


class FakeNvml:
    """A stand-in for the pynvml binding (no GPU here): three cards, the last without memory figures."""

    class NVMLError(Exception):
        pass

    CARDS = [("GPU-aaaa-1111", "NVIDIA A100-SXM4-80GB", 80 * GiB, GiB, 7),
             ("GPU-bbbb-2222", "NVIDIA A100-SXM4-80GB", 80 * GiB, 40 * GiB, 93),
             ("GPU-cccc-3333", "NVIDIA L4", None, None, None)]

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.CARDS)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.CARDS[i]

    def nvmlDeviceGetUUID(self, card):
        return card[0]

    def nvmlDeviceGetName(self, card):
        return card[1].encode()  # older bindings answer bytes

    def nvmlDeviceGetMemoryInfo(self, card):
        if card[2] is None:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(total=card[2], used=card[3], free=card[2] - card[3])

    def nvmlDeviceGetUtilizationRates(self, card):
        if card[4] is None:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(gpu=card[4], memory=0)


def test_inventory_numbers_cards_as_cuda_does(monkeypatch):
    """The NVML path, run against a stand-in binding (no GPU here)."""
    from a3s_power import gpu

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    monkeypatch.setattr(gpu.platform, "system", lambda: "Linux")
    gpu._nvml.reset()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    try:
        cards = gpu_stats()
        assert [(g.index, g.name, g.memory_total, g.memory_used) for g in cards[:2]] == [
            (0, "cuda:0 NVIDIA A100-SXM4-80GB", 80 * GiB, GiB), (1, "cuda:1 NVIDIA A100-SXM4-80GB", 80 * GiB, 40 * GiB)]
        assert len(cards) == 2 and cards[1].utilization == 0.93  # the card without memory figures is left out
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")
        assert [(g.index, g.memory_used) for g in gpu_stats()] == [(0, 40 * GiB), (1, GiB)]
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,0")  # CUDA stops at the first card it cannot find
        assert [(g.index, g.memory_used) for g in gpu_stats()] == [(0, 40 * GiB)]
    finally:
        gpu._nvml.reset()


def test_no_nvml_means_no_nvidia_gpus(monkeypatch):
    from a3s_power import gpu

    class Broken(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", Broken())
    monkeypatch.setattr(gpu.platform, "system", lambda: "Linux")
    gpu._nvml.reset()
    try:
        assert gpu_stats() == []
    finally:
        gpu._nvml.reset()


# --- the scheduler applies it ------------------------------------------------------------------


@pytest.fixture
def loads(monkeypatch):
    """Every ModelParams that reaches _core.Model, in order; the real model still loads."""
    seen = []
    real = _core.Model

    def model(path, params):
        seen.append((Path(path).name, params.n_gpu_layers, params.main_gpu, params.split_mode,
                     list(params.tensor_split)))
        return real(path, params)

    monkeypatch.setattr(_core, "Model", model)
    return seen


def test_scheduler_puts_two_models_on_two_gpus_and_reports_them(smollm2_path, tiny_path, loads):
    """Fake inventory on a CPU build: llama.cpp ignores the GPU parameters, the load must still work."""
    load = LoadOptions(num_ctx=256)
    smol = memory.estimate(smollm2_path, load)
    # GPU 0 is the freer, but once SmolLM2 is there, GPU 1 has more left.
    others = [gpu(0, 1.5 * smol.total / GiB, 4), gpu(1, 1.2 * smol.total / GiB, 4)]

    def nvml():  # as it would read: other processes, plus the models loaded here
        held = promised([(r.name, r.placement) for r in scheduler.running()])
        return [replace(g, memory_used=g.memory_used + held.get(g.index, 0)) for g in others]

    specs = {"smol": LocalModel(name="smol", model_path=Path(smollm2_path)),
             "tiny": LocalModel(name="tiny", model_path=Path(tiny_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__, gpus=nvml)

    async def main():
        a = await scheduler.load(specs["smol"], load, None)
        b = await scheduler.load(specs["tiny"], load, None)
        placed = [(r.name, r.placement.main_gpu, r.memory == r.placement.total) for r in (a, b)]
        await scheduler.close()
        return placed

    assert asyncio.run(main()) == [("smol", 0, True), ("tiny", 1, True)]
    assert [(name, gpu_layers, main, split) for name, gpu_layers, main, split, _ in loads] == [
        (Path(smollm2_path).name, -1, 0, "none"), (Path(tiny_path).name, -1, 1, "none")]


def test_scheduler_spreads_a_model_no_gpu_holds(smollm2_path, loads):
    """Fake inventory on a CPU build: the layer split reaches _core and the model still loads."""
    load = LoadOptions(num_ctx=256)
    est = memory.estimate(smollm2_path, load)
    each = (est.compute + 0.6 * (est.weights + est.kv_cache)) / GiB  # neither GPU holds it alone
    specs = {"smol": LocalModel(name="smol", model_path=Path(smollm2_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__,
                          gpus=lambda: [gpu(0, each, 4), gpu(1, each, 4)])

    async def main():
        runner = await scheduler.load(specs["smol"], load, None)
        text = "".join([c.text async for c in runner.model.generate(runner.model.tokenize("Hi"),
                                                                     parse_options({"num_predict": 2}))])
        await scheduler.close()
        return runner.placement, text

    placement, text = asyncio.run(main())
    (_, gpu_layers, _, split, tensor_split), = loads
    assert (gpu_layers, split) == (-1, "layer") and sum(tensor_split) == est.layers + 1 and all(tensor_split)
    assert placement.complete and text


def test_a_load_that_runs_out_of_gpu_memory_is_retried_with_fewer_layers(smollm2_path, monkeypatch):
    """The estimate said it fits, llama.cpp's allocation said no (as CUDA words it): the scheduler
    gives up a quarter of the layers at a time until the load succeeds, and reports where it went."""
    from a3s_power.errors import ModelLoadError

    tried, real = [], _core.Model
    load = LoadOptions(num_ctx=256)
    est = memory.estimate(smollm2_path, load)
    fits = (est.layers + 1) // 2  # the real card holds half the layers, whatever the estimate says

    def model(path, params):
        tried.append(params.n_gpu_layers)
        if params.n_gpu_layers < 0 or params.n_gpu_layers > fits:
            raise ModelLoadError(f"failed to load model {path}: ggml_backend_cuda_buffer_type_alloc_buffer: "
                                 "allocating 512.00 MiB on device 0: cudaMalloc failed: out of memory")
        return real(path, params)

    monkeypatch.setattr(_core, "Model", model)
    specs = {"smol": LocalModel(name="smol", model_path=Path(smollm2_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__,
                          gpus=lambda: [gpu(0, 20)])

    async def main():
        runner = await scheduler.load(specs["smol"], load, None)
        await scheduler.close()
        return runner.placement

    placement = asyncio.run(main())
    offloadable = est.layers + 1
    assert tried[0] == -1 and len(tried) > 2 and 0 < tried[-1] <= fits
    assert all(b < a for a, b in zip([offloadable, *tried[1:]], tried[1:]))  # fewer each time
    assert placement.n_gpu_layers == tried[-1] and placement.gpus[0].layers == tried[-1] and placement.cpu_bytes > 0


def test_other_load_errors_are_not_retried(tiny_path, monkeypatch):
    from a3s_power.errors import ModelLoadError

    tried = []

    def model(path, params):
        tried.append(params.n_gpu_layers)
        raise ModelLoadError(f"failed to load model {path}: unknown model architecture: 'gptoss'")

    monkeypatch.setattr(_core, "Model", model)
    specs = {"tiny": LocalModel(name="tiny", model_path=Path(tiny_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__,
                          gpus=lambda: [gpu(0, 20)])
    with pytest.raises(ModelLoadError, match="gptoss"):
        asyncio.run(scheduler.load(specs["tiny"], LoadOptions(num_ctx=256), None))
    assert tried == [-1]


def test_vram_is_measured_on_the_device_during_the_load(smollm2_path, monkeypatch):
    """What the device's used memory grew by while the model loaded is what /api/ps reports."""
    real, taken = _core.Model, 3 * GiB // 2

    def model(path, params):
        card.memory_used += taken  # as NVML would see the allocation
        return real(path, params)

    card = gpu(0, 20)
    monkeypatch.setattr(_core, "Model", model)
    specs = {"smol": LocalModel(name="smol", model_path=Path(smollm2_path))}
    scheduler = Scheduler(server_config(num_parallel=1, context_length=256), specs.__getitem__,
                          gpus=lambda: [replace(card)])

    async def main():
        runner = await scheduler.load(specs["smol"], LoadOptions(num_ctx=256), None)
        await scheduler.close()
        return runner.vram_measured

    assert asyncio.run(main()) == {0: taken}


# --- /api/ps and the CLI -----------------------------------------------------------------------


@pytest.fixture
def placed_server(smollm2_path, monkeypatch):
    """The test harness's server, its scheduler given a fake inventory of two 4 GiB GPUs."""
    monkeypatch.setattr(server_harness, "Scheduler",
                        functools.partial(Scheduler, gpus=lambda: [gpu(0, 1, 4), gpu(1, 3, 4)]))
    srv = RunningServer(server_config(num_parallel=1, context_length=512), resolver(smollm2=smollm2_path)).start()
    monkeypatch.setenv("OLLAMA_HOST", srv.url)
    get_config.cache_clear()
    yield srv
    srv.stop()
    get_config.cache_clear()


def _ps(srv) -> dict:
    return next(m for m in requests.get(srv.url + "/api/ps").json()["models"] if m["name"] == "smollm2:latest")


def _processor_column(runner: CliRunner) -> str:
    result = runner.invoke(cli_models.ps, [], catch_exceptions=False)
    header, row = result.output.splitlines()[:2]
    start = header.index("PROCESSOR")
    return row[start:header.index("CONTEXT")].strip()


def test_ps_shows_which_gpus_hold_a_model(placed_server):
    """Fake inventory on a CPU build: /api/ps reports the placement the scheduler made."""
    requests.post(placed_server.url + "/api/generate", json={"model": "smollm2"}).raise_for_status()
    entry = _ps(placed_server)
    assert [(g["id"], g["layers"]) for g in entry["gpus"]] == [("cuda:1", 31)]
    assert entry["size_vram"] == entry["size"] == entry["gpus"][0]["size_vram"] > 0
    assert _processor_column(CliRunner()) == "100% GPU"

    requests.post(placed_server.url + "/api/generate",
                  json={"model": "smollm2", "options": {"num_gpu": 10}}).raise_for_status()
    entry = _ps(placed_server)
    assert [(g["id"], g["layers"]) for g in entry["gpus"]] == [("cuda:1", 10)]
    assert 0 < entry["size_vram"] < entry["size"]
    cpu = int(100 * (entry["size"] - entry["size_vram"]) / entry["size"] + 0.5)
    assert _processor_column(CliRunner()) == f"{cpu}%/{100 - cpu}% CPU/GPU"


def test_processor_column_follows_ollama():
    assert cli_models._processor(100, 0) == "100% CPU"
    assert cli_models._processor(100, 100) == "100% GPU"
    assert cli_models._processor(200, 97) == "52%/48% CPU/GPU"  # 51.5% rounds up, as Go's math.Round
    assert cli_models._processor(100, 150) == "Unknown"
