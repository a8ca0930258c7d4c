"""A3S Power's server against llama.cpp's llama-server on a GPU, through HTTP, as clients see them.

Both servers run side by side on the same model with the same slots, context per slot, flash
attention and every layer offloaded; every measure alternates between them, round by round.
Clients are several processes (one asyncio loop each), so that the client is never the limit.

Measured per server (medians over rounds):
  - single-stream decode tok/s (256 tokens) and time to first token, against llama-bench's tg128;
  - prefill of a 1,000-token prompt (time to first token of a 1-token answer);
  - aggregate tok/s, p50/p95 request latency and p50/p95 TTFT at 1, 8, 32 and 64 streams
    (streaming /v1/completions, ~100-token prompts, 128 tokens out), against llama-batched-bench's
    generation rate at the same batch sizes (the engine's ceiling, no HTTP, no sampling per slot);
  - time to first token of one request sent right after a 64-stream burst;
  - GPU memory each server took (NVML, device memory before and after each server loaded).

    python benchmarks/gpu_http_bench.py --model MODEL.gguf --bin LLAMA_CPP_BIN_DIR [--json out.json]

The model needs no chat template (prompts go through /v1/completions as they are); random weights
are fine. End-of-generation tokens are banned (logit_bias -100) on both servers so that every
request produces exactly its tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_server import LlamaServer, PowerServer  # noqa: E402

LEVELS = (1, 8, 32, 64)  # concurrent streams measured; --levels changes them for a trial run
FILLER = ("The history of computing is a story of people finding ways to make machines follow instructions. "
          "Each generation of machines built on the ideas of the last, and each made the next one possible. ")


# --- the clients (run in worker processes) -----------------------------------------------------


async def _stream(session, url: str, body: dict, start_at: float) -> dict:
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    started = time.time()
    first = last = 0.0
    pieces = 0
    usage = None
    finish = ""
    async with session.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            return {"error": f"{r.status} {await r.text()}"}
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    now = time.time()
                    first = first or now
                    last = now
                    pieces += 1
                finish = choice.get("finish_reason") or finish
    tokens = usage["completion_tokens"] if usage else pieces
    return {"start": started, "first": first, "end": last, "tokens": tokens, "finish": finish}


def engine_phases(url: str) -> dict:
    """Our server's engine time by phase (seconds) and steps, summed over models, from /metrics."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    out = {"decode": 0.0, "sample": 0.0, "other": 0.0, "steps": 0.0}
    for line in text.splitlines():
        if line.startswith("power_engine_seconds_total{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            out[phase] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("power_engine_steps_total{"):
            out["steps"] += float(line.rsplit(" ", 1)[1])
    return out


def run_clients(url: str, bodies: list[dict], start_at: float) -> list[dict]:
    """One worker process: its share of the streams, all at once, from ``start_at`` (wall clock)."""
    import aiohttp

    async def main():
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=900)) as s:
            return await asyncio.gather(*(_stream(s, url, b, start_at) for b in bodies))

    return asyncio.run(main())


# --- the measures ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, ban: list[int], prompt_100: str, prompt_1000: str) -> None:
        self.args = args
        self.ban = {str(t): -100 for t in ban}
        self.prompt_100 = prompt_100
        self.prompt_1000 = prompt_1000
        self.pool = ProcessPoolExecutor(max_workers=args.clients)

    def body(self, model: str, prompt: str, max_tokens: int) -> dict:
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "logit_bias": self.ban, "stream_options": {"include_usage": True}}

    def streams(self, server, bodies: list[dict]) -> list[dict]:
        """All ``bodies`` at once, spread over the client processes."""
        n = min(self.args.clients, len(bodies))
        shares = [bodies[i::n] for i in range(n)]
        start_at = time.time() + 0.3
        futures = [self.pool.submit(run_clients, server.url, share, start_at) for share in shares]
        results = [r for f in futures for r in f.result()]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"{server.name}: {errors[0]}")
        return results

    def level(self, server, n: int, tag: str) -> dict:
        bodies = [self.body(server.model, f"{tag} request {i}. {self.prompt_100}", self.args.tokens) for i in range(n)]
        phases = engine_phases(server.url) if server.name == "a3s-power" else None
        results = self.streams(server, bodies)
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        latency = sorted(r["end"] - r["start"] for r in results)
        ttft = sorted(r["first"] - r["start"] for r in results)
        out = {"tps": sum(r["tokens"] for r in results) / wall, "p50_s": _pct(latency, 50), "p95_s": _pct(latency, 95),
               "ttft_p50_ms": _pct(ttft, 50) * 1e3, "ttft_p95_ms": _pct(ttft, 95) * 1e3,
               "tokens": sum(r["tokens"] for r in results), "finish": sorted({r["finish"] for r in results})}
        if phases is not None:  # the engine thread's time per step, by phase (what a step costs)
            after = engine_phases(server.url)
            steps = max(after["steps"] - phases["steps"], 1)
            out["step_ms"] = {k: (after[k] - phases[k]) * 1e3 / steps for k in ("decode", "sample", "other")}
            out["steps"] = steps
        return out

    def single(self, server, tag: str) -> dict:
        r, = self.streams(server, [self.body(server.model, f"{tag} {self.prompt_100}", 256)])
        return {"decode_tps": (r["tokens"] - 1) / (r["end"] - r["first"]), "ttft_ms": (r["first"] - r["start"]) * 1e3}

    def prefill(self, server, tag: str) -> float:
        r, = self.streams(server, [self.body(server.model, f"{tag} {self.prompt_1000}", 1)])
        return (r["first"] - r["start"]) * 1e3

    def after_burst(self, server, tag: str) -> float:
        """TTFT of one request sent the moment a 64-stream burst ends."""
        self.level(server, max(self.args.levels), tag + " burst")
        r, = self.streams(server, [self.body(server.model, f"{tag} after the burst. {self.prompt_100}", 8)])
        return (r["first"] - r["start"]) * 1e3


def _pct(sorted_values: list[float], p: int) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def gpu_used() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA GPU: a trial run on the CPU
        return 0
    return sum(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used
               for i in range(pynvml.nvmlDeviceGetCount()))


def gpu_name() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return "no NVIDIA GPU"
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = pynvml.nvmlDeviceGetName(h)
    driver = pynvml.nvmlSystemGetDriverVersion()
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    return f"{text(name)}, driver {text(driver)}"


def llama_bench(bins: Path, model: str, args) -> dict:
    out = subprocess.run([str(bins / "llama-bench"), "-m", model, "-ngl", "99", "-fa", "1", "-p", "1000", "-n", "128",
                          "-r", "3", "-o", "json"], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    return {"pp1000_tps": next(r["avg_ts"] for r in rows if r["n_prompt"] == 1000),
            "tg128_tps": next(r["avg_ts"] for r in rows if r["n_gen"] == 128)}


def batched_bench(bins: Path, model: str, args) -> dict[int, float]:
    """llama-batched-bench's generation rate (S_TG t/s) at each batch size: the engine's ceiling."""
    out = subprocess.run([str(bins / "llama-batched-bench"), "-m", model, "-ngl", "99", "-fa", "on",
                          "-c", str(max(args.levels) * (100 + args.tokens + 16)), "-b", "2048", "-ub", "512",
                          "-npp", "100", "-ntg", str(args.tokens), "-npl", ",".join(map(str, args.levels))],
                         capture_output=True, text=True, check=True).stdout
    rates = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[0] or "x") and int(cells[2]) in args.levels:
            rates[int(cells[2])] = float(cells[7])  # PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG | T | S
    return rates


def tokenizer(model_path: str):
    from a3s_power.core import _core

    params = _core.ModelParams()
    params.vocab_only = True
    return _core.Model(model_path, params)


def run(args) -> dict:
    bins = Path(args.bin)
    vocab = tokenizer(args.model)
    ban = sorted(t for t in range(vocab.n_vocab) if vocab.is_eog(t))
    filler = vocab.tokenize(FILLER * 400, False, False)
    prompt_100, prompt_1000 = vocab.detokenize(filler[:92]), vocab.detokenize(filler[:992])
    vocab.close()

    home = tempfile.TemporaryDirectory()
    before = gpu_used()
    ls = LlamaServer(bins / "llama-server", args.model, args.threads, args.slots, args.ctx, "on", gpu_layers=99)
    ps = None
    report: dict = {"date": time.strftime("%Y-%m-%d"), "gpu": gpu_name(), "machine": f"{platform.machine()}, "
                    f"{os.cpu_count()} CPUs", "model": os.path.basename(args.model), "slots": args.slots,
                    "ctx_per_slot": args.ctx, "tokens": args.tokens, "levels": args.levels, "rounds": args.rounds,
                    "clients": args.clients}
    bench = Bench(args, ban, prompt_100, prompt_1000)
    try:
        asyncio.run(ls.wait_ready("/health"))
        with_llama = gpu_used()
        ps = PowerServer(Path(home.name), args.threads, args.slots, args.ctx, "on")
        asyncio.run(ps.wait_ready("/api/version"))
        asyncio.run(ps.create(args.model, template="{{ .Prompt }}"))
        for server in (ls, ps):  # warm-up: load, first allocations, CUDA graphs
            bench.level(server, 8, "warm-up")
        report["gpu_memory_mib"] = {"llama-server": (with_llama - before) / 2**20,
                                    "a3s-power": (gpu_used() - with_llama) / 2**20}
        runs: dict[str, list[dict]] = {"llama-server": [], "a3s-power": []}
        report["llama_bench"], report["batched_bench_tg_tps"] = [], {}
        for rnd in range(args.rounds):
            report["llama_bench"].append(llama_bench(bins, args.model, args))
            for server in ((ls, ps) if rnd % 2 == 0 else (ps, ls)):
                tag = f"Round {rnd}."
                row = {"single": bench.single(server, tag), "prefill_ms": bench.prefill(server, tag)}
                for n in args.levels:
                    row[f"c{n}"] = bench.level(server, n, f"{tag} c{n}")
                row["ttft_after_burst_ms"] = bench.after_burst(server, tag)
                runs[server.name].append(row)
                print(f"round {rnd} {server.name}: " + ", ".join(
                    f"c{n} {row[f'c{n}']['tps']:.0f} tok/s" for n in args.levels), flush=True)
        report["batched_bench_tg_tps"] = batched_bench(bins, args.model, args)
        report["runs"] = runs
    finally:
        bench.pool.shutdown()
        ls.stop()
        if ps is not None:
            ps.stop()
        home.cleanup()
    return report


def table(report: dict) -> str:
    runs = report["runs"]

    def med(name: str, *path) -> float:
        values = []
        for row in runs[name]:
            for key in path:
                row = row[key]
            values.append(row)
        return statistics.median(values)

    tg = statistics.median(b["tg128_tps"] for b in report["llama_bench"])
    pp = statistics.median(b["pp1000_tps"] for b in report["llama_bench"])
    lines = [f"{report['model']} on {report['gpu']}; {report['slots']} slots x {report['ctx_per_slot']} ctx, "
             f"flash attention on, all layers on the GPU, {report['tokens']} tokens out, median of "
             f"{report['rounds']} rounds; llama-bench tg128 {tg:.0f} tok/s, pp1000 {pp:.0f} tok/s",
             "", "| measure | llama-server | a3s-power | a3s-power / llama-server |", "|---|---|---|---|"]

    def row(label: str, a: float, b: float) -> None:
        lines.append(f"| {label} | {a:,.1f} | {b:,.1f} | {b / a if a else float('nan'):.2f} |")

    row("decode tok/s, 1 stream", med("llama-server", "single", "decode_tps"), med("a3s-power", "single", "decode_tps"))
    lines.append(f"| decode / llama-bench tg128 | {med('llama-server', 'single', 'decode_tps') / tg:.2f} | "
                 f"{med('a3s-power', 'single', 'decode_tps') / tg:.2f} | |")
    row("time to first token, ms", med("llama-server", "single", "ttft_ms"), med("a3s-power", "single", "ttft_ms"))
    row("prefill 1,000 tokens, ms", med("llama-server", "prefill_ms"), med("a3s-power", "prefill_ms"))
    levels = report["levels"]
    for n in levels:
        row(f"aggregate tok/s, {n} streams", med("llama-server", f"c{n}", "tps"), med("a3s-power", f"c{n}", "tps"))
        for key, label in (("p50_s", "p50 latency s"), ("p95_s", "p95 latency s"), ("ttft_p50_ms", "p50 TTFT ms"),
                           ("ttft_p95_ms", "p95 TTFT ms")):
            row(f"{label}, {n} streams", med("llama-server", f"c{n}", key), med("a3s-power", f"c{n}", key))
    row(f"TTFT ms right after a {max(levels)}-stream burst", med("llama-server", "ttft_after_burst_ms"),
        med("a3s-power", "ttft_after_burst_ms"))
    mem = report["gpu_memory_mib"]
    row("GPU memory, MiB", mem["llama-server"], mem["a3s-power"])
    lines.append("")
    lines.append("| streams | a3s-power engine step: decode ms | sample ms | other ms | steps |")
    lines.append("|---|---|---|---|---|")
    for n in levels:
        steps = [row[f"c{n}"] for row in runs["a3s-power"] if "step_ms" in row[f"c{n}"]]
        if steps:
            ms = {k: statistics.median(r["step_ms"][k] for r in steps) for k in ("decode", "sample", "other")}
            lines.append(f"| {n} | {ms['decode']:.2f} | {ms['sample']:.2f} | {ms['other']:.2f} | "
                         f"{statistics.median(r['steps'] for r in steps):.0f} |")
    ceiling = report["batched_bench_tg_tps"]
    lines.append("")
    lines.append("| streams | llama-batched-bench tok/s | llama-server share | a3s-power share |")
    lines.append("|---|---|---|---|")
    for n in levels:
        if n in ceiling:
            lines.append(f"| {n} | {ceiling[n]:,.0f} | {med('llama-server', f'c{n}', 'tps') / ceiling[n]:.2f} | "
                         f"{med('a3s-power', f'c{n}', 'tps') / ceiling[n]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a GGUF file")
    parser.add_argument("--bin", required=True, help="folder with llama-server, llama-bench, llama-batched-bench")
    parser.add_argument("--levels", type=lambda v: [int(x) for x in v.split(",")], default=list(LEVELS))
    parser.add_argument("--slots", type=int, default=max(LEVELS))
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
