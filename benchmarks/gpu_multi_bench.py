"""Several GPUs, through the scheduler as the server runs it (in process, without HTTP):

1. *alone*: the model on one GPU, where the scheduler puts it, against ``llama-bench -sm none`` on
   that GPU;
2. *spread*: the same model when it does not fit one GPU. The test model is small, so
   ``OLLAMA_GPU_OVERHEAD`` reserves all but 75 % of the model's estimated size on every GPU: the
   scheduler must split its layers over two. Against ``llama-bench -sm layer -ts A/B`` with the
   split the scheduler chose;
3. *tensor split*: the model with ``split_mode tensor`` (llama.cpp's tensor parallelism: weights
   and KV cache split over the GPUs; this llama.cpp's CUDA backend has no row split any more)
   against ``llama-bench -sm tensor`` with the same proportions;
4. *two models*: two models (separate files) loaded at once, which the scheduler should put on two
   GPUs, decoding at the same time, each against its decode speed alone.

Decode speed is the engine's (eval_count / eval_duration) for 128 tokens after a short prompt,
greedy, end of generation banned; medians of ``--reps`` runs. Flash attention on for both sides.

    python benchmarks/gpu_multi_bench.py --model M.gguf --bin LLAMA_BUILD/bin [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from a3s_power.api import GenerateRequest
from a3s_power.config import Config
from a3s_power.core import _core
from a3s_power.engine import memory
from a3s_power.engine.scheduler import Scheduler, cuda_devices
from a3s_power.engine.service import InferenceService
from a3s_power.store.types import LocalModel

PROMPT = "Write a long story about a lighthouse keeper."
N_GEN = 128


def llama_bench(bin_dir: Path, model: str, *split: str, reps: int = 3) -> float:
    cmd = [str(bin_dir / "llama-bench"), "-m", model, "-ngl", "99", "-fa", "1", "-p", "0", "-n", str(N_GEN),
           "-r", str(reps), "-o", "json", *split]
    print("  $", " ".join(cmd), flush=True)
    return float(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)[0]["avg_ts"])


def end_of_generation(path: str) -> dict[int, float]:
    params = _core.ModelParams()
    params.vocab_only = True
    model = _core.Model(path, params)
    ban = {t: -1e9 for t in range(model.n_vocab) if model.is_eog(t)}
    model.close()
    return ban


class Bench:
    def __init__(self, models: dict[str, str], **config) -> None:
        specs = {name: LocalModel(name=name, model_path=Path(path)) for name, path in models.items()}
        self.home = tempfile.TemporaryDirectory()
        self.config = Config(home=Path(self.home.name), num_parallel=1, context_length=2048, flash_attention=True,
                             keep_alive=-1, **config)
        self.scheduler = Scheduler(self.config, specs.__getitem__)
        self.service = InferenceService(self.scheduler)
        self.ban = end_of_generation(next(iter(models.values())))

    async def decode(self, name: str, **options) -> float:
        metrics: dict = {}
        request = GenerateRequest(model=name, prompt=PROMPT, logit_bias=self.ban,
                                  options={"num_predict": N_GEN, "temperature": 0, **options})
        async for delta in self.service.generate(request):
            if delta.done:
                metrics = delta.metrics.model_dump()
        return metrics["eval_count"] / (metrics["eval_duration"] / 1e9)

    def placement(self, name: str):
        return next(r.placement for r in self.scheduler.running() if r.name == name)

    async def close(self) -> None:
        await self.scheduler.close()
        self.home.cleanup()


async def median_decode(bench: Bench, name: str, reps: int, **options) -> float:
    await bench.decode(name, **options)  # load and warm up
    return statistics.median([await bench.decode(name, **options) for _ in range(reps)])


async def main_async(args) -> dict:
    gpus = cuda_devices()
    for g in gpus:
        print(f"GPU {g.index}: {g.name}, {g.memory_used >> 20} / {g.memory_total >> 20} MiB used", flush=True)
    if len(gpus) < 2:
        raise SystemExit("needs two GPUs or more")
    report: dict = {"gpus": [g.name for g in gpus], "model": Path(args.model).name}

    print("\n1. alone", flush=True)
    bench = Bench({"a": args.model})
    ours = await median_decode(bench, "a", args.reps)
    placed = bench.placement("a")
    print(f"  placement: {placed}", flush=True)
    await bench.close()
    gpu = placed.gpus[0].index
    ref = llama_bench(args.bin, args.model, "-sm", "none", "-mg", str(gpu))
    report["alone"] = {"placement": str(placed), "ours": ours, "llama_bench": ref, "ratio": ours / ref}
    print(f"  decode tok/s: ours {ours:.1f}, llama-bench {ref:.1f}, ratio {ours / ref:.3f}", flush=True)

    print("\n2. spread over two GPUs", flush=True)
    bench = Bench({"a": args.model})
    # The scheduler's own load options and a fresh inventory: this process's CUDA contexts now
    # hold memory on every GPU that the first reading did not show.
    load = bench.service.options_for(LocalModel(name="a", model_path=Path(args.model)), None).load
    need = memory.estimate(args.model, load).total
    free = min(g.memory_total - g.memory_used for g in cuda_devices())
    overhead = free - int(need * 0.75)
    bench.config.gpu_overhead = overhead
    print(f"  estimated need {need >> 20} MiB; OLLAMA_GPU_OVERHEAD {overhead >> 20} MiB leaves "
          f"{int(need * 0.75) >> 20} MiB on each GPU", flush=True)
    ours = await median_decode(bench, "a", args.reps)
    placed = bench.placement("a")
    print(f"  placement: {placed}", flush=True)
    await bench.close()
    layers = {g.index: g.layers for g in placed.gpus}
    split = "/".join(str(layers.get(i, 0)) for i in range(max(layers) + 1))
    ref = llama_bench(args.bin, args.model, "-sm", "layer", "-ts", split)
    report["spread"] = {"overhead": overhead, "placement": str(placed), "tensor_split": split,
                        "complete": placed.complete, "ours": ours, "llama_bench": ref, "ratio": ours / ref}
    print(f"  decode tok/s: ours {ours:.1f}, llama-bench -ts {split} {ref:.1f}, ratio {ours / ref:.3f}", flush=True)

    print("\n3. tensor split over two GPUs (split_mode tensor)", flush=True)
    bench = Bench({"a": args.model})
    ours = await median_decode(bench, "a", args.reps, split_mode="tensor")
    placed = bench.placement("a")
    print(f"  placement: {placed}", flush=True)
    await bench.close()
    split = "/".join(f"{x / sum(placed.tensor_split):.4f}" for x in placed.tensor_split)
    ref = llama_bench(args.bin, args.model, "-sm", "tensor", "-ts", split)
    report["tensor"] = {"placement": str(placed), "tensor_split": split, "ours": ours, "llama_bench": ref,
                     "ratio": ours / ref}
    print(f"  decode tok/s: ours {ours:.1f}, llama-bench -sm tensor -ts {split} {ref:.1f}, ratio {ours / ref:.3f}",
          flush=True)

    print("\n4. two models at once", flush=True)
    second = str(Path(args.model).with_name("second-" + Path(args.model).name))
    if not Path(second).exists():
        shutil.copyfile(args.model, second)
    bench = Bench({"a": args.model, "b": second}, max_loaded_models=2)
    alone = {name: await median_decode(bench, name, args.reps) for name in ("a", "b")}
    where = {name: str(bench.placement(name)) for name in ("a", "b")}
    print(f"  placements: {where}", flush=True)
    together: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(args.reps):
        started = time.perf_counter()
        a, b = await asyncio.gather(bench.decode("a"), bench.decode("b"))
        together["a"].append(a)
        together["b"].append(b)
        print(f"  together: a {a:.1f}, b {b:.1f} tok/s ({time.perf_counter() - started:.2f} s)", flush=True)
    await bench.close()
    report["two_models"] = {"placements": where, "alone": alone,
                            "together": {k: statistics.median(v) for k, v in together.items()},
                            "ratio": {k: statistics.median(v) / alone[k] for k, v in together.items()}}
    print(f"  each at once / alone: {report['two_models']['ratio']}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--bin", type=Path, required=True, help="folder with llama-bench")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
