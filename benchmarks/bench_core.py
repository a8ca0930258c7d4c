"""Single-stream prefill and decode speed of ``_core`` against a raw llama.cpp loop.

Both run the same model, prompt tokens, threads and context settings, one after the other in
alternation so that machine noise hits both alike; medians are reported with ratios
(ours / raw, higher is better, 1.0 is parity).

    python benchmarks/bench_core.py [--model smollm2] [--threads 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a3s_power.core import _core  # noqa: E402
from a3s_power.engine.options import parse_options, replace_load  # noqa: E402
from a3s_power.engine.runner import LoadedModel  # noqa: E402
from tests import model_cache  # noqa: E402

TEXT = (
    "The history of computing is a story of people finding ways to make machines follow instructions. "
    "From the mechanical calculators of the seventeenth century to the electronic computers of today, "
    "each generation built on the ideas of the last. "
)


def build_reference() -> Path:
    """Compiles ref_loop.cpp against the same llama.cpp the package uses (cached by source mtime)."""
    prefix = Path(sysconfig.get_paths()["platlib"])
    lib = prefix / "llama_cpp" / "lib"
    out_dir = Path(os.environ.get("A3S_POWER_BENCH_CACHE", Path.home() / ".cache" / "a3s-power" / "bench"))
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).with_name("ref_loop.cpp")
    exe = out_dir / "ref_loop"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(
            ["g++", "-O2", "-std=c++17", str(src), f"-I{prefix / 'include'}", f"-L{lib}", "-lllama", "-lggml",
             "-lggml-base", f"-Wl,-rpath,{lib}", "-o", str(exe)],
            check=True,
        )
    return exe


def run_reference(exe: Path, model: str, prompt: list[int], n_decode: int, threads: int, n_ctx: int,
                  n_batch: int, flash_attn: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(" ".join(map(str, prompt)))
    try:
        out = subprocess.run([str(exe), model, f.name, str(n_decode), str(threads), str(n_ctx), str(n_batch),
                              flash_attn],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    r = json.loads(out)
    return {"prefill_tps": r["prompt_tokens"] / (r["prefill_ns"] / 1e9),
            "decode_tps": r["decode_tokens"] / (r["decode_ns"] / 1e9)}


async def run_ours(loaded: LoadedModel, prompt: list[int], n_decode: int) -> dict:
    options = parse_options({"temperature": 0, "num_predict": n_decode})
    no_eos = {loaded.model.eos_token: -1e9}
    started = time.perf_counter_ns()
    first = last = 0
    n = 0
    timings: dict = {}
    async for chunk in loaded.generate(prompt, options, logit_bias=no_eos):
        now = time.perf_counter_ns()
        if chunk.tokens and not first:
            first = now
        if chunk.tokens:
            last = now
        n += len(chunk.tokens)
        if chunk.done:
            timings = chunk.timings
    assert n == n_decode, f"generated {n} tokens, wanted {n_decode}"
    return {
        "prefill_tps": timings["prompt_eval_count"] / (timings["prompt_eval_duration"] / 1e9),
        "decode_tps": (timings["eval_count"] - 1) / (timings["eval_duration"] / 1e9),
        # What a client of the Python API sees: submit to first token, and the stream after it.
        "ttft_ms": (first - started) / 1e6,
        "stream_tps": (n - 1) / ((last - first) / 1e9) if last > first else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help=f"a path, or one of {', '.join(model_cache.MODELS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto",
                        help="for both sides; auto is llama.cpp's and our default")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    model_path = args.model if os.path.exists(args.model) else str(model_cache.ensure(args.model))
    n_ctx, n_batch = 2048, 512
    exe = build_reference()

    flash = {"auto": None, "on": True, "off": False}[args.flash_attn]
    options = replace_load(parse_options({"num_thread": args.threads, "num_ctx": n_ctx, "num_batch": n_batch}),
                           num_parallel=1, flash_attention=flash)
    loaded = LoadedModel(model_path, options.load)
    text = TEXT * (args.prompt_tokens // 40 + 2)
    prompt = loaded.tokenize(text, True, False)[: args.prompt_tokens]

    ours, ref = [], []
    for _ in range(args.reps):
        ref.append(run_reference(exe, model_path, prompt, args.decode, args.threads, n_ctx, n_batch, args.flash_attn))
        # Each run starts from an empty cache, as the reference does.
        loaded.close()
        loaded = LoadedModel(model_path, options.load)
        ours.append(asyncio.run(run_ours(loaded, prompt, args.decode)))
    loaded.close()

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {_core.system_info().strip()}",
        "model": os.path.basename(model_path),
        "threads": args.threads,
        "flash_attn": args.flash_attn,
        "prompt_tokens": len(prompt),
        "decode_tokens": args.decode,
        "reps": args.reps,
        "raw_prefill_tps": med(ref, "prefill_tps"),
        "ours_prefill_tps": med(ours, "prefill_tps"),
        "raw_decode_tps": med(ref, "decode_tps"),
        "ours_decode_tps": med(ours, "decode_tps"),
        "ours_stream_tps": med(ours, "stream_tps"),
        "ours_ttft_ms": med(ours, "ttft_ms"),
    }
    result["prefill_ratio"] = result["ours_prefill_tps"] / result["raw_prefill_tps"]
    result["decode_ratio"] = result["ours_decode_tps"] / result["raw_decode_tps"]
    result["stream_ratio"] = result["ours_stream_tps"] / result["raw_decode_tps"]

    print(f"model {result['model']}, {args.threads} threads, {len(prompt)}-token prompt, {args.decode} tokens, "
          f"flash attention {args.flash_attn}, median of {args.reps}")
    print("| measure | raw llama.cpp | a3s-power _core | ratio |")
    print("|---|---|---|---|")
    print(f"| prefill tok/s | {result['raw_prefill_tps']:.1f} | {result['ours_prefill_tps']:.1f} | "
          f"{result['prefill_ratio']:.3f} |")
    print(f"| decode tok/s (engine) | {result['raw_decode_tps']:.1f} | {result['ours_decode_tps']:.1f} | "
          f"{result['decode_ratio']:.3f} |")
    print(f"| decode tok/s (asyncio stream) | {result['raw_decode_tps']:.1f} | {result['ours_stream_tps']:.1f} | "
          f"{result['stream_ratio']:.3f} |")
    print(f"| time to first token, ms | | {result['ours_ttft_ms']:.1f} | |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
