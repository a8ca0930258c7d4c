"""GPU prefill and decode speed of ``_core`` against llama.cpp's own ``llama-bench`` and
``llama-batched-bench``, and against a raw C-API loop (``gpu_ref_loop.cpp``), on one model with
every layer offloaded.

Run by ``benchmarks/gpu_device.sh`` on the GPU machine, after it has built llama.cpp with CUDA and
``_core`` against that build; ``a3s_power`` (with the built ``_core``) must be importable.

    python benchmarks/gpu_bench.py --model M.gguf --bin LLAMA_BUILD/bin [--raw gpu_ref_loop]
                                   [--rounds 5] [--reps 3] [--fa off,on] [--no-diag] [--json out.json]

Rounds alternate reference and ours (llama-bench, raw loop, ours, llama-batched-bench,
ours-parallel, ...) so that drift in clocks falls on both sides; medians of every sample are reported.

- *pp512*: a 512-token prompt in one batch (n_batch = n_ubatch = 512). llama-bench: ``-p 512``;
  ours, "wall TTFT": 512 / (submit to the first token seen by the consumer). The engine's own
  prompt_eval_duration ("pp512" in ours) ends before the GPU has finished on CUDA (llama_decode
  only queues the work), so it overstates prefill speed there.
- *tg128*: 128 tokens decoded one at a time on an empty context. llama-bench: ``-p 0 -n 128``;
  ours: a 4-token prompt, 129 tokens generated, (eval_count - 1) / eval_duration, so the 128 timed
  steps are the decode steps after the first token; "stream wall": the same from the times the
  consumer saw the first and last tokens.
- *tg128 @ d512*: the same after a 512-token context (llama-bench ``-d 512``; ours: after the
  512-token prompt; use "stream wall", since the engine's eval_duration there also holds the end
  of the prefill on a GPU).
- *4 streams*: 4 requests of a 4-token prompt and 128 decoded tokens each at once
  (n_parallel 4); aggregate decode tok/s = all decoded tokens / the longest decode window.
  Reference: llama-batched-bench ``-kvu -npp 4 -ntg 128 -npl 4`` (a unified KV cache, as ours),
  its S_TG (tokens/time of the decode steps alone).

End of generation is banned (logit bias on every end-of-generation token), so every request
produces exactly its tokens. Greedy sampling (temperature 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from a3s_power.core import _core  # noqa: E402


def nvidia_smi() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem,temperature.gpu",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi failed: {e}"


def nvidia_smi_apps() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi failed: {e}"


# --- the references -------------------------------------------------------------------------


def llama_bench(bin_dir: Path, model: str, fa: str, threads: int, reps: int, n_prompt: int, n_gen: int,
                depth: int) -> list[dict]:
    cmd = [str(bin_dir / "llama-bench"), "-m", model, "-ngl", "99", "-fa", "1" if fa == "on" else "0",
           "-t", str(threads), "-b", "512", "-ub", "512", "-r", str(reps), "-p", str(n_prompt), "-n", str(n_gen),
           "-d", f"0,{depth}", "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout)
    return [{"test": test_name(r["n_prompt"], r["n_gen"], r["n_depth"]), "samples": r["samples_ts"],
             "cmd": " ".join(cmd)} for r in rows]


def test_name(n_prompt: int, n_gen: int, depth: int) -> str:
    name = f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"
    return name + (f" @ d{depth}" if depth else "")


def batched_bench(bin_dir: Path, model: str, fa: str, threads: int, n_gen: int, parallel: int,
                  unified: bool) -> list[dict]:
    cmd = [str(bin_dir / "llama-batched-bench"), "-m", model, "-ngl", "99", "-fa", fa, "-t", str(threads),
           "-c", str(2048 * parallel), "-b", "512", "-ub", "512", *(["-kvu"] if unified else []), "-npp", "4",
           "-ntg", str(n_gen), "-npl", f"1,{parallel}", "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = []
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        line = line.strip()
        if line.startswith('{"n_kv_max"'):
            r = json.loads(line)
            rows.append({"pl": r["pl"], "speed_tg": r["speed_tg"], "cmd": " ".join(cmd)})
    if not rows:
        raise RuntimeError("llama-batched-bench printed no results:\n" + out.stdout[-2000:] + out.stderr[-2000:])
    return rows


def raw_loop(exe: Path, model: str, fa: str, threads: int, reps: int) -> dict[str, list[float]]:
    out = subprocess.run([str(exe), model, str(threads), "1" if fa == "on" else "0", str(reps)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


LAYOUTS = {True: "one KV buffer", False: "a KV buffer per slot"}


# --- ours -----------------------------------------------------------------------------------


class Ours:
    def __init__(self, model: _core.Model, threads: int):
        self.model = model
        self.threads = threads
        self.ban = [(t, -1e9) for t in range(model.n_vocab) if model.is_eog(t)]
        self.normal = [t for t in range(model.n_vocab) if not model.is_eog(t)
                       and model.token_to_piece(t, True) and t not in (model.bos_token,)]
        self.rng = random.Random(1234)
        self.last_first = -1

    def engine(self, fa: str, parallel: int = 1, n_ctx: int = 2048, kv_unified: bool = False) -> _core.Engine:
        p = _core.ContextParams()
        p.kv_unified = kv_unified
        p.n_ctx = n_ctx
        p.n_parallel = parallel
        p.n_batch = 512
        p.n_ubatch = 512
        p.n_threads = self.threads
        p.n_threads_batch = self.threads
        p.flash_attn = fa
        return _core.Engine(self.model, p)

    def prompt(self, n: int) -> list[int]:
        # Never the last prompt's first token, so that nothing of it is served from the KV cache.
        first = self.rng.choice([t for t in self.normal[:64] if t != self.last_first])
        self.last_first = first
        return [first] + [self.rng.choice(self.normal) for _ in range(n - 1)]

    def sampling(self) -> _core.SamplingParams:
        return _core.SamplingParams(temperature=0.0, repeat_penalty=1.0, logit_bias=self.ban)

    def run(self, engine: _core.Engine, prompts: list[list[int]], n_predict: int,
            consumer: str = "block") -> tuple[list[dict], float]:
        """Runs the requests to the end. Each request's engine timings come back with the wall
        times a consumer of drain() saw: ``wall_ttft`` (submit to the first token's arrival) and
        ``wall_stream`` (first token's arrival to the last's). ``consumer``: "block" waits in
        drain(200), woken at every step; "poll" sleeps 50 ms between drain(0) calls (its wall
        times are coarse)."""
        t0 = time.perf_counter()
        ids = [engine.submit(p, _core.GenerateParams(sampling=self.sampling(), num_predict=n_predict, shift=False))
               for p in prompts]
        left = set(ids)
        timings: dict[int, dict] = {}
        counts = {i: 0 for i in ids}
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        deadline = time.monotonic() + 300
        while left:
            if time.monotonic() > deadline:
                raise RuntimeError("requests did not finish in time")
            if consumer == "poll":
                time.sleep(0.05)
                events = engine.drain(0)
            else:
                events = engine.drain(200)
            now = time.perf_counter()
            for event in events:
                if event.id not in counts:
                    continue
                if event.tokens:
                    first.setdefault(event.id, now)
                    last[event.id] = now
                counts[event.id] += len(event.tokens)
                if event.done:
                    if event.error:
                        raise RuntimeError(event.error)
                    timings[event.id] = dict(event.timings)
                    left.discard(event.id)
        wall = time.perf_counter() - t0
        for i in ids:
            if counts[i] != n_predict:
                raise RuntimeError(f"request {i} produced {counts[i]} tokens, wanted {n_predict}")
            timings[i]["wall_ttft"] = first[i] - t0
            timings[i]["wall_stream"] = last[i] - first[i]
        return [timings[i] for i in ids], wall


def decode_tps(t: dict) -> float:
    return (t["eval_count"] - 1) / (t["eval_duration"] / 1e9)


def prefill_tps(t: dict) -> float:
    return t["prompt_eval_count"] / (t["prompt_eval_duration"] / 1e9)


def stream_tps(t: dict) -> float:
    return (t["eval_count"] - 1) / t["wall_stream"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--bin", type=Path, required=True, help="folder with llama-bench and llama-batched-bench")
    parser.add_argument("--raw", type=Path, help="gpu_ref_loop, built from benchmarks/gpu_ref_loop.cpp")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="samples per measure and round, each side")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--fa", default="off,on", help="flash attention settings to measure")
    parser.add_argument("--no-diag", dest="diag", action="store_false", help="skip the diagnostic variants")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n_prompt, n_gen = 512, 128

    print(f"llama.cpp {_core.llama_version()}; gpu offload supported: {_core.supports_gpu_offload()}; "
          f"devices: {_core.max_devices()}", flush=True)
    print("system_info:", _core.system_info().strip(), flush=True)
    print("nvidia-smi before load:", nvidia_smi(), flush=True)

    _core.set_log_level(2)  # llama.cpp's info log: devices, offloaded layers, buffer sizes
    mp = _core.ModelParams()
    mp.n_gpu_layers = -1
    model = _core.Model(args.model, mp)
    probe = None
    sys.stderr.flush()
    ours = Ours(model, args.threads)
    probe = ours.engine("off")
    _core.set_log_level(0)
    print(f"\nmodel {os.path.basename(args.model)}: {model.n_params / 1e9:.3f} B params, {model.size / 2**20:.0f} MiB, "
          f"{model.n_layer} layers, n_embd {model.n_embd}, n_vocab {model.n_vocab}", flush=True)
    print("nvidia-smi after load:", nvidia_smi(), "| apps:", nvidia_smi_apps(), f"| our pid {os.getpid()}", flush=True)
    probe.close()

    results: dict = {"date": time.strftime("%Y-%m-%d"), "gpu": nvidia_smi(), "model": os.path.basename(args.model),
                     "threads": args.threads, "rounds": args.rounds, "reps": args.reps, "fa": {}}
    for fa in args.fa.split(","):
        ref: dict[str, list[float]] = {}
        raw: dict[str, list[float]] = {}
        mine: dict[str, list[float]] = {}
        ref_cmds: dict[str, str] = {}
        # One engine at a time, as one loaded model: an engine's thread keeps an OpenMP team for 2 s
        # after its last request, and more teams than CPUs make libgomp's workers sleep between steps.
        def fresh(parallel: int = 1, kv_unified: bool = False, fa: str = fa) -> _core.Engine:
            e = ours.engine(fa, parallel, kv_unified=kv_unified)
            ours.run(e, [ours.prompt(4) for _ in range(parallel)], 16)  # CUDA graphs, kernels
            return e
        for rnd in range(args.rounds):
            for r in llama_bench(args.bin, args.model, fa, args.threads, args.reps, n_prompt, n_gen, n_prompt):
                ref.setdefault(r["test"], []).extend(r["samples"])
                ref_cmds["llama-bench"] = r["cmd"]
            if args.raw:
                for k, v in raw_loop(args.raw, args.model, fa, args.threads, args.reps).items():
                    raw.setdefault(k, []).extend(v)
            single = fresh()
            for _ in range(args.reps):
                (t,), _ = ours.run(single, [ours.prompt(4)], n_gen + 1)
                mine.setdefault(f"tg{n_gen}", []).append(decode_tps(t))
                mine.setdefault(f"tg{n_gen}, stream wall", []).append(stream_tps(t))
                (t,), _ = ours.run(single, [ours.prompt(n_prompt)], n_gen + 1)
                assert t["prompt_eval_count"] == n_prompt, t
                mine.setdefault(f"pp{n_prompt}", []).append(prefill_tps(t))
                mine.setdefault(f"pp{n_prompt}, wall TTFT", []).append(n_prompt / t["wall_ttft"])
                mine.setdefault(f"tg{n_gen} @ d{n_prompt}", []).append(decode_tps(t))
                mine.setdefault(f"tg{n_gen} @ d{n_prompt}, stream wall", []).append(stream_tps(t))
            single.close()
            # Several streams in either KV layout: one buffer for all slots, or one per slot (our default).
            for unified, layout in LAYOUTS.items():
                engine = fresh(args.parallel, unified)
                for r in batched_bench(args.bin, args.model, fa, args.threads, n_gen, args.parallel, unified):
                    key = f"{r['pl']} streams, {layout}" if r["pl"] > 1 else f"1 stream (batched-bench), {layout}"
                    ref.setdefault(key, []).append(r["speed_tg"])
                    ref_cmds[f"llama-batched-bench, {layout}"] = r["cmd"]
                for _ in range(args.reps):
                    ts, wall = ours.run(engine, [ours.prompt(4) for _ in range(args.parallel)], n_gen + 1)
                    decoded = sum(t["eval_count"] - 1 for t in ts)
                    window = max(t["eval_duration"] for t in ts) / 1e9
                    mine.setdefault(f"{args.parallel} streams, {layout}", []).append(decoded / window)
                    mine.setdefault(f"{args.parallel} streams, {layout}, wall", []).append(
                        args.parallel * (n_gen + 1) / wall)
                engine.close()
            print(f"fa {fa} round {rnd + 1}: " + ", ".join(
                f"{k} ref {statistics.median(ref[k]):.1f} ours {statistics.median(mine[k]):.1f}"
                for k in mine if k in ref), flush=True)
        # Diagnostics: single-stream tg128 (engine timings) with a consumer woken at every step or
        # polling every 50 ms, and with a 2048- or 256-token context.
        diag: dict[str, list[float]] = {}
        if args.diag:
            for n_ctx in (2048, 256):
                e = ours.engine(fa, 1, n_ctx)
                ours.run(e, [ours.prompt(4)], 16)
                for _ in range(args.rounds * args.reps):
                    for consumer in ("block", "poll"):
                        (t,), _ = ours.run(e, [ours.prompt(4)], n_gen + 1, consumer)
                        diag.setdefault(f"tg{n_gen}, n_ctx {n_ctx}, consumer {consumer}", []).append(decode_tps(t))
                e.close()
            for k, v in diag.items():
                print(f"fa {fa} diag: {k}: median {statistics.median(v):.1f} tok/s "
                      f"(min {min(v):.1f}, max {max(v):.1f}, n {len(v)}); "
                      f"llama-bench tg{n_gen} {statistics.median(ref[f'tg{n_gen}']):.1f}", flush=True)
        results["fa"][fa] = {"ref": ref, "raw": raw, "ours": mine, "diag": diag, "ref_cmds": ref_cmds}

    print(f"\n{results['gpu']}; {results['model']}; threads {args.threads}; "
          f"medians of {args.rounds} rounds x {args.reps} samples each side")
    print("| flash attn | measure | llama.cpp tool | llama.cpp tok/s | a3s-power _core tok/s | ratio |")
    print("|---|---|---|---|---|---|")
    for fa, r in results["fa"].items():
        for key in [f"pp{n_prompt}", f"pp{n_prompt}, wall TTFT", f"tg{n_gen}", f"tg{n_gen}, stream wall",
                    f"tg{n_gen} @ d{n_prompt}", f"tg{n_gen} @ d{n_prompt}, stream wall",
                    *(k for layout in LAYOUTS.values() for k in (
                        f"{args.parallel} streams, {layout}", f"{args.parallel} streams, {layout}, wall",
                        f"1 stream (batched-bench), {layout}"))]:
            ref_key = key.removesuffix(", wall").removesuffix(", stream wall").removesuffix(", wall TTFT")
            a = statistics.median(r["ref"][ref_key]) if ref_key in r["ref"] else None
            b = statistics.median(r["ours"][key]) if key in r["ours"] else None
            tool = "llama-batched-bench" if "streams" in key or "batched" in key else "llama-bench"
            ratio = f"{b / a:.3f}" if a and b else ""
            print(f"| {fa} | {key} | {tool} | {a:.1f} | " if a else f"| {fa} | {key} | {tool} | | ", end="")
            print(f"{b:.1f} | {ratio} |" if b else " | |")
    if args.raw:
        print("\nagainst the raw loop (gpu_ref_loop.cpp: same n_ctx 2048, batch 512, threads, one process, warmed up)")
        print("| flash attn | measure | raw loop tok/s | a3s-power _core tok/s | ratio |")
        print("|---|---|---|---|---|")
        for fa, r in results["fa"].items():
            for raw_key, key in [(f"pp{n_prompt}", f"pp{n_prompt}, wall TTFT"), (f"tg{n_gen}", f"tg{n_gen}"),
                                 (f"tg{n_gen}", f"tg{n_gen}, stream wall"),
                                 (f"tg{n_gen} @ d{n_prompt}", f"tg{n_gen} @ d{n_prompt}, stream wall")]:
                a = statistics.median(r["raw"][raw_key])
                b = statistics.median(r["ours"][key])
                print(f"| {fa} | {key} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
    for fa, r in results["fa"].items():
        for cmd in r["ref_cmds"].values():
            print(f"fa {fa}: {cmd}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    model.close()


if __name__ == "__main__":
    main()
