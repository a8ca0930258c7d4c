"""A3S Power's server against llama.cpp's own llama-server (and llama-bench), same model, threads,
slots and context, over HTTP with streaming, as clients see them.

Measured for both servers, in alternating rounds (medians reported):
  - single-stream decode tok/s and time to first token, against llama-bench's decode rate;
  - prefill of a ~1,500-token prompt;
  - aggregate tok/s and p50/p95 request latency at 1, 2, 4 and 8 concurrent streams;
  - time to first token on each turn of a 6-turn chat, and of 6 chats taking turns over the slots;
  - latency of a cheap GET while 8 streams run (/api/version here, /health for llama-server);
  - resident memory of the server process and its model workers.

    python benchmarks/bench_server.py [--model smollm2] [--threads 2] [--slots 4] [--rounds 2]

With --in-process-too, a third server, ours with every model in its own process
(A3S_POWER_MODEL_WORKERS=0), takes its turn beside the others: what the worker processes cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import llama_tools  # noqa: E402

from tests import model_cache  # noqa: E402

FILLER = ("The history of computing is a story of people finding ways to make machines follow instructions. "
          "Each generation of machines built on the ideas of the last. ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and of its children (our server's model workers)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            total += sum(rss_bytes(int(child)) for child in children.read_text().split())
    except OSError:
        pass
    return total


class Server:
    name = ""
    model = ""
    cheap_path = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, path: str) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.get(self.url + path) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class LlamaServer(Server):
    name = "llama-server"
    cheap_path = "/health"

    def __init__(self, binary: Path, model_path: str, threads: int, slots: int, ctx: int, flash_attn: str,
                 gpu_layers: int | None = None) -> None:
        super().__init__()
        self.model = "model"
        self.proc = subprocess.Popen(
            [str(binary), "-m", model_path, "-t", str(threads), "-tb", str(threads), "-np", str(slots),
             "-c", str(ctx * slots), "--host", "127.0.0.1", "--port", str(self.port), "-fa", flash_attn,
             "--no-webui", "-a", "model", *(["-ngl", str(gpu_layers)] if gpu_layers is not None else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PowerServer(Server):
    name = "a3s-power"
    cheap_path = "/api/version"

    def __init__(self, home: Path, threads: int, slots: int, ctx: int, flash_attn: str,
                 inference_nice: int | None = None, model_workers: bool = True) -> None:
        super().__init__()
        self.model = "bench"
        if not model_workers:
            self.name = "a3s-power in-process"
        env = {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_HOST": f"127.0.0.1:{self.port}",
               "OLLAMA_NUM_PARALLEL": str(slots), "OLLAMA_CONTEXT_LENGTH": str(ctx), "OLLAMA_KEEP_ALIVE": "-1",
               "A3S_POWER_MODEL_WORKERS": "1" if model_workers else "0"}
        env.pop("A3S_POWER_INFERENCE_NICE", None)
        if inference_nice is not None:
            env["A3S_POWER_INFERENCE_NICE"] = str(inference_nice)
        env.pop("OLLAMA_FLASH_ATTENTION", None)
        if flash_attn != "auto":
            env["OLLAMA_FLASH_ATTENTION"] = "1" if flash_attn == "on" else "0"
        (home / "config.toml").write_text(f"num_thread = {threads}\n")
        self.proc = subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def create(self, model_path: str, template: str | None = None) -> None:
        import ollama

        client = ollama.AsyncClient(host=self.url, timeout=1800)
        digest = await client.create_blob(model_path)
        async for _ in await client.create(model=self.model, files={"model.gguf": digest}, template=template,
                                           stream=True):
            pass


async def stream_chat(server: Server, messages: list[dict], max_tokens: int, ban: list[int]) -> dict:
    """One streamed chat completion: time to first token, time of the last, tokens."""
    body = {"model": server.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "logit_bias": {str(t): -100 for t in ban}}
    started = time.perf_counter()
    first = last = 0.0
    text = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        async with s.post(server.url + "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        text.append(piece)
    return {"ttft": first - started, "decode_s": last - first, "total": last - started, "text": "".join(text)}


POLLER = """
import http.client, json, select, sys, time
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
lat = []
while True:
    t0 = time.perf_counter()
    c.request("GET", sys.argv[2])
    c.getresponse().read()
    lat.append((time.perf_counter() - t0) * 1e3)
    if select.select([sys.stdin], [], [], 0.02)[0]:  # a 20 ms pause, or the word to stop
        break
print(json.dumps(lat))
"""


async def cheap_get_latency(server: Server, load) -> list[float]:
    """Latency of the server's cheapest GET while ``load`` runs, measured from a process of its own so
    that the streaming client's busy event loop is not part of what is measured."""
    poller = await asyncio.create_subprocess_exec(sys.executable, "-c", POLLER, str(server.port), server.cheap_path,
                                                  stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.2)
    await load
    out, _ = await poller.communicate(b"stop\n")
    return json.loads(out)


async def measure_round(server: Server, ban: list[int], n_tokens: int, long_prompt: str, tag: str) -> dict:
    """One round of every measure but the single-stream decode. ``tag`` starts every prompt, so that
    nothing a previous round left in the prefix cache helps this one."""
    out: dict = {}
    q = [{"role": "user", "content": f"{tag} Write a long essay about the history of computing."}]
    prefill = await stream_chat(server, [{"role": "user", "content": f"{tag} {long_prompt}"}], 2, ban)
    out["prefill_ms"] = prefill["ttft"] * 1e3

    for n in (1, 2, 4, 8):
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_chat(
            server, [{"role": "user", "content": f"{tag} Story number {i}."}], n_tokens, ban) for i in range(n)))
        wall = time.perf_counter() - started
        lat = sorted(r["total"] for r in results)
        out[f"c{n}_tps"] = n * n_tokens / wall
        out[f"c{n}_p50_s"] = statistics.median(lat)
        out[f"c{n}_p95_s"] = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]

    # A 6-turn chat: each turn's prompt is the whole conversation so far.
    history: list[dict] = [{"role": "system", "content": tag + " " + FILLER * 6}]
    ttfts = []
    for turn in range(6):
        history.append({"role": "user", "content": f"Turn {turn}: tell me one more fact."})
        r = await stream_chat(server, history, 24, ban)
        ttfts.append(r["ttft"] * 1e3)
        history.append({"role": "assistant", "content": r["text"]})
    out["chat_ttft_ms"] = ttfts

    # More conversations than slots, taking turns: each comes back after others took its slot.
    convs = [[{"role": "system", "content": f"{tag} Conversation {c}. " + FILLER * 3}] for c in range(6)]
    for turn in range(3):
        ttfts = []
        for conv in convs:
            conv.append({"role": "user", "content": f"Turn {turn}: one more fact."})
            r = await stream_chat(server, conv, 16, ban)
            ttfts.append(r["ttft"] * 1e3)
            conv.append({"role": "assistant", "content": r["text"]})
        out[f"six_chats_turn{turn + 1}_ttft_ms"] = statistics.median(ttfts)

    lat = sorted(await cheap_get_latency(server, asyncio.gather(*(stream_chat(server, q, n_tokens, ban)
                                                                   for _ in range(8)))))
    out["cheap_p50_ms"] = statistics.median(lat)
    out["cheap_p99_ms"] = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))]
    out["rss_mb"] = rss_bytes(server.proc.pid) / 2**20
    return out


async def single_stream(server: Server, ban: list[int], n_tokens: int, tag: str) -> dict:
    q = [{"role": "user", "content": f"{tag} Write a long essay about the history of computing."}]
    r = await stream_chat(server, q, n_tokens, ban)
    return {"decode_tps": (n_tokens - 1) / r["decode_s"], "ttft_ms": r["ttft"] * 1e3}


def llama_bench(binary: Path, model_path: str, threads: int, n_tokens: int, flash_attn: str) -> float:
    out = subprocess.run([str(binary), "-m", model_path, "-t", str(threads), "-p", "0", "-n", str(n_tokens),
                          "-fa", flash_attn, "-r", "3", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


async def main_async(args) -> dict:
    model_path = args.model if os.path.exists(args.model) else str(model_cache.ensure(args.model))
    bins = llama_tools.build()
    from a3s_power.core import _core

    m = _core.Model(model_path, _core.ModelParams())
    ban = sorted({t for t in (m.eos_token, *(i for i in range(m.n_vocab) if m.is_eog(i)))})
    m.close()
    long_prompt = (FILLER * 40)[: 1500 * 4]
    bench_tps = []
    # The servers stay up side by side (an idle one takes no CPU) and every measure alternates
    # between them, in an order that turns each round, so that the machine's drift falls on all alike.
    homes = [tempfile.TemporaryDirectory() for _ in range(2)]
    ls = LlamaServer(bins / "llama-server", model_path, args.threads, args.slots, args.ctx, args.flash_attn)
    ours = [PowerServer(Path(homes[0].name), args.threads, args.slots, args.ctx, args.flash_attn, args.inference_nice)]
    if args.in_process_too:
        ours.append(PowerServer(Path(homes[1].name), args.threads, args.slots, args.ctx, args.flash_attn,
                                args.inference_nice, model_workers=False))
    servers: list[Server] = [ls, *ours]
    results: dict[str, list[dict]] = {server.name: [] for server in servers}
    singles: dict[str, list[dict]] = {server.name: [] for server in servers}
    try:
        await ls.wait_ready("/health")
        for ps in ours:
            await ps.wait_ready("/api/version")
            await ps.create(model_path)
        for server in servers:  # warm-up: load, first allocations
            await stream_chat(server, [{"role": "user", "content": "Hello."}], 8, ban)
        for rnd in range(args.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            # Single-stream decode, each run right beside a run of llama-bench.
            for i in range(args.decode_runs):
                tps = llama_bench(bins / "llama-bench", model_path, args.threads, args.tokens, args.flash_attn)
                bench_tps.append(tps)
                for server in order:
                    r = await single_stream(server, ban, args.tokens, f"Round {rnd}.{i}.")
                    r["vs_llama_bench"] = r["decode_tps"] / tps
                    singles[server.name].append(r)
            for server in order:
                results[server.name].append(await measure_round(server, ban, args.tokens, long_prompt,
                                                                f"Round {rnd}."))
    finally:
        for server in servers:
            server.stop()
        for home in homes:
            home.cleanup()
    def med(name: str, key: str) -> float:
        runs = singles[name] if key in singles[name][0] else results[name]
        return statistics.median(r[key] for r in runs)

    bench = statistics.median(bench_tps)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "model": os.path.basename(model_path), "threads": args.threads, "slots": args.slots,
              "ctx_per_slot": args.ctx, "flash_attn": args.flash_attn, "inference_nice": args.inference_nice,
              "tokens": args.tokens, "rounds": args.rounds,
              "llama_cpp_commit": llama_tools.LLAMA_CPP_COMMIT, "llama_bench_tg_tps": bench_tps,
              "singles": singles, "results": results}
    rows = [("decode tok/s, 1 stream", "decode_tps"), ("time to first token, ms", "ttft_ms"),
            ("prefill ~1,500 tokens, ms", "prefill_ms")]
    for n in (1, 2, 4, 8):
        rows += [(f"aggregate tok/s, {n} streams", f"c{n}_tps"), (f"p50 latency s, {n} streams", f"c{n}_p50_s"),
                 (f"p95 latency s, {n} streams", f"c{n}_p95_s")]
    rows += [(f"6 chats over {args.slots} slots, TTFT ms, turn {t}", f"six_chats_turn{t}_ttft_ms") for t in (1, 2, 3)]
    rows += [("cheap GET p50 ms under 8 streams", "cheap_p50_ms"), ("cheap GET p99 ms under 8 streams", "cheap_p99_ms"),
             ("resident memory, MiB", "rss_mb")]
    print(f"{report['model']}, {args.threads} threads, {args.slots} slots x {args.ctx} ctx, {args.tokens} tokens, "
          f"flash attention {args.flash_attn}, median of {args.rounds} rounds; "
          f"llama-bench tg{args.tokens}: {bench:.1f} tok/s")
    print("| measure | llama-server | a3s-power | a3s-power / llama-server |")
    print("|---|---|---|---|")
    for label, key in rows:
        a, b = med("llama-server", key), med("a3s-power", key)
        print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.3f} |")
    if args.in_process_too:
        print()
        print("| measure | a3s-power, models in-process | a3s-power, model workers | workers / in-process |")
        print("|---|---|---|---|")
        for label, key in rows:
            a, b = med("a3s-power in-process", key), med("a3s-power", key)
            print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.3f} |")
    for name in singles:
        print(f"| decode / llama-bench (median of paired runs), {name} | | | "
              f"{med(name, 'vs_llama_bench'):.3f} |")
        turns = [statistics.median(r["chat_ttft_ms"][i] for r in results[name]) for i in range(6)]
        print(f"| 6-turn chat TTFT ms, {name} | {' / '.join(f'{t:.0f}' for t in turns)} | | "
              f"turn 6 / turn 1 = {turns[-1] / turns[0]:.2f} |")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decode-runs", type=int, default=3,
                        help="single-stream runs per round, each paired with a run of llama-bench")
    parser.add_argument("--inference-nice", type=int,
                        help="A3S_POWER_INFERENCE_NICE for our server (default: its own, 10)")
    parser.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto",
                        help="for all three; auto is the default of llama-bench, llama-server, Ollama and ours")
    parser.add_argument("--in-process-too", action="store_true",
                        help="also run our server with every model in its own process (A3S_POWER_MODEL_WORKERS=0)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
