"""A bounded soak of the real server: many clients, mixed APIs, clients that go away mid-stream,
bursts past the queue. It checks what must hold under load rather than how fast it is:

  - every request is answered (200, a finished stream) or refused with Ollama's 503 before its
    first byte; nothing else (no 500, no broken stream, no hang);
  - afterwards no slot is busy, nothing is queued, and a full load of new requests is served (no
    slot or queue place leaked by the clients that went away);
  - resident memory after the warm-up, at its highest, and at the end.

    python benchmarks/soak.py [--seconds 120] [--clients 32] [--model smollm2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serve_process import proc_status_bytes, serve  # noqa: E402

SLOTS = 4
MAX_QUEUE = 40  # the steady clients fit (slots + queue); the bursts do not
KINDS = ("generate", "chat", "openai-chat", "openai-completion", "embed")


class Soak:
    def __init__(self, url: str, seed: int, kinds: tuple[str, ...] = KINDS) -> None:
        self.url = url
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.outcomes: Counter = Counter()
        self.problems: list[str] = []

    def _request(self) -> tuple[str, str, dict, bool]:
        """(label, path, body, streamed) for one random request."""
        n = self.rng.randint(4, 48)
        words = " ".join(self.rng.choice(("sky", "sea", "tree", "code", "light", "river", "stone")) for _ in range(8))
        kind = self.rng.choice(self.kinds)
        opts = {"num_predict": n, "temperature": self.rng.choice((0, 0.8))}
        if kind == "generate":
            return kind, "/api/generate", {"model": "soak", "prompt": words, "options": opts}, True
        if kind == "chat":
            return kind, "/api/chat", {"model": "soak", "messages": [{"role": "user", "content": words}],
                                       "options": opts}, True
        if kind == "openai-chat":
            return kind, "/v1/chat/completions", {"model": "soak", "max_tokens": n, "stream": True,
                                                  "messages": [{"role": "user", "content": words}]}, True
        if kind == "openai-completion":
            return kind, "/v1/completions", {"model": "soak", "prompt": words, "max_tokens": n}, False
        return kind, "/api/embed", {"model": "soak", "input": [words, words[::-1]]}, False

    async def one(self, session: aiohttp.ClientSession, leave_early: bool) -> None:
        label, path, body, streamed = self._request()
        leave_early = leave_early and streamed
        try:
            async with session.post(self.url + path, json=body) as r:
                if r.status == 503:
                    self.outcomes["refused 503"] += 1
                    await r.read()
                    return
                if r.status != 200:
                    self.problems.append(f"{label}: HTTP {r.status} {(await r.text())[:200]}")
                    return
                if not streamed:
                    await r.json()
                    self.outcomes["answered"] += 1
                    return
                finished, chunks = False, 0
                async for line in r.content:
                    line = line.strip()
                    if not line:
                        continue
                    chunks += 1
                    if leave_early and chunks >= 2:
                        self.outcomes["left mid-stream"] += 1
                        return  # closing the response drops the connection
                    if line.startswith(b"data: "):
                        finished = finished or line == b"data: [DONE]"
                    else:
                        finished = finished or json.loads(line).get("done") is True
                if finished:
                    self.outcomes["answered"] += 1
                else:
                    self.problems.append(f"{label}: stream ended without its last message")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.problems.append(f"{label}: {exc.__class__.__name__}: {exc}")

    async def client(self, session: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            await self.one(session, leave_early=self.rng.random() < 1 / 3)

    async def burst(self, session: aiohttp.ClientSession, size: int) -> None:
        await asyncio.gather(*(self.one(session, leave_early=False) for _ in range(size)))


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def run(url: str, pid: int, seconds: float, clients: int, seed: int, kinds: tuple[str, ...]) -> dict:
    soak = Soak(url, seed, kinds)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await soak.burst(session, SLOTS)  # warm-up: model loaded, buffers touched
        rss_start, rss = proc_status_bytes(pid, "VmRSS"), []
        until = time.monotonic() + seconds

        async def sample() -> None:
            while time.monotonic() < until:
                rss.append(proc_status_bytes(pid, "VmRSS"))
                await asyncio.sleep(1)

        async def bursts() -> None:
            while time.monotonic() + 10 < until:
                await asyncio.sleep(10)
                await soak.burst(session, clients + MAX_QUEUE)

        await asyncio.gather(sample(), bursts(), *(soak.client(session, until) for _ in range(clients)))
        print(f"soak done: {dict(soak.outcomes)}, {len(soak.problems)} problems", file=sys.stderr, flush=True)
        await asyncio.sleep(2)  # the engine notices the last disconnections
        busy = await _metric(session, url, "power_slots_busy")
        queued = await _metric(session, url, "power_queue_depth")
        # No place leaked: as many requests as the server takes at once are all served.
        after = Soak(url, seed + 1, kinds)
        await asyncio.gather(*(after.one(session, leave_early=False) for _ in range(SLOTS + MAX_QUEUE)))
        rss_end = proc_status_bytes(pid, "VmRSS")
    return {"seconds": seconds, "clients": clients, "slots": SLOTS, "max_queue": MAX_QUEUE,
            "outcomes": dict(soak.outcomes), "problems": soak.problems, "slots_busy_after": busy,
            "queued_after": queued, "full_load_after": dict(after.outcomes), "full_load_problems": after.problems,
            "rss_start_mib": rss_start / 2**20, "rss_max_mib": max(rss or [rss_start]) / 2**20,
            "rss_end_mib": rss_end / 2**20}


def soak(model_path: str, seconds: float, clients: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> dict:
    import ollama

    with tempfile.TemporaryDirectory() as home:
        with serve(Path(home), OLLAMA_NUM_PARALLEL=str(SLOTS), OLLAMA_MAX_QUEUE=str(MAX_QUEUE),
                   OLLAMA_CONTEXT_LENGTH="1024", OLLAMA_KEEP_ALIVE="-1", PYTHONFAULTHANDLER="1") as server:
            client = ollama.Client(host=server.url, timeout=300)
            list(client.create(model="soak", files={"m.gguf": client.create_blob(model_path)}, stream=True))
            report = asyncio.run(run(server.url, server.proc.pid, seconds, clients, seed, kinds))
    report["server_exit"] = server.proc.returncode
    report["tracebacks"] = server.log.count("Traceback")
    if server.proc.returncode != 0 or report["tracebacks"]:
        report["server_log_tail"] = server.log[-6000:]
    return report


def main() -> None:
    from tests import model_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--kinds", default=",".join(KINDS), help="request kinds to mix")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = args.model if os.path.exists(args.model) else str(model_cache.ensure(args.model))
    report = soak(path, args.seconds, args.clients, kinds=tuple(args.kinds.split(",")))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
