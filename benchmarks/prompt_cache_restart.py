"""Time to first token of turn 7 of a long chat: warm (the conversation still in its slot), after a
restart of the server (the prompt cache's disk tier), and cold (a restarted server without the disk
tier, so the whole conversation is evaluated again).

    PYTHONPATH=python python benchmarks/prompt_cache_restart.py [--model PATH.gguf] [--turns 7]

Each measure starts real ``a3s-power serve`` processes on 127.0.0.1 over a fresh home; medians of
``--rounds`` rounds. The model defaults to the test suite's Qwen2.5-Coder-0.5B (downloaded from PyPI
once, as the tests do)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["the history of Paris", "how bridges carry load", "the water cycle", "why the sky is blue",
          "how vaccines train the immune system", "the rules of chess", "how a compiler works", "volcanoes"]


class Server:
    def __init__(self, home: Path, port: int, disk_mb: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_HOST": f"127.0.0.1:{port}",
               "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_CONTEXT_LENGTH": "8192",
               "A3S_POWER_PROMPT_CACHE_DISK_MB": str(disk_mb), "PYTHONPATH": str(ROOT / "python")}
        self.proc = subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                requests.get(self.url + "/api/version", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("serve did not start")

    def stop(self) -> None:
        self.proc.send_signal(2)  # Ctrl-C: a graceful shutdown, as a user's restart is
        self.proc.wait(60)

    def load(self) -> None:
        """Loads the model (a request without messages): a restart's load is not the cache's to pay."""
        r = requests.post(self.url + "/api/chat", json={"model": "bench", "messages": []}, timeout=600)
        r.raise_for_status()

    def chat(self, messages: list[dict], tokens: int) -> tuple[float, dict, dict]:
        """Time to the first token (s), the answer message and the final chunk."""
        body = {"model": "bench", "messages": messages, "stream": True,
                "options": {"temperature": 0, "num_predict": tokens}}
        start = time.perf_counter()
        first = None
        content = ""
        final: dict = {}
        with requests.post(self.url + "/api/chat", json=body, stream=True, timeout=600) as r:
            for line in r.iter_lines():
                chunk = json.loads(line)
                if first is None and chunk.get("message", {}).get("content"):
                    first = time.perf_counter() - start
                content += chunk.get("message", {}).get("content", "")
                if chunk.get("done"):
                    final = chunk
        return (first if first is not None else time.perf_counter() - start), \
            {"role": "assistant", "content": content}, final


def conversation(server: Server, turns: int) -> list[dict]:
    """Turns 1..turns-1 of a chat, each a question and a 120-token answer."""
    messages: list[dict] = []
    for i in range(turns - 1):
        messages.append({"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} in detail."})
        _, answer, _ = server.chat(messages, 120)
        messages.append(answer)
    return messages


def one_round(model: Path, turns: int, port: int) -> dict:
    """Turns 1-6 on a server that then stops; turn 7 on the restarted one (its slot empty, the
    conversation on disk), then another turn 7 there (warm: turns 1-6 in its slot), then turn 7 on
    a server without the disk tier (cold). Each turn 7 evaluates one new question; each server has
    loaded the model before it is timed."""
    ask = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = Server(home, port, disk_mb=4096)
        subprocess.run([sys.executable, "-m", "a3s_power", "create", "bench", "-f", str(_modelfile(home, model))],
                       env={**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://"),
                            "PYTHONPATH": str(ROOT / "python")}, check=True, capture_output=True)
        history = conversation(server, turns)
        server.stop()

        restarted = Server(home, port, disk_mb=4096)
        restarted.load()
        after_restart, _, final = restarted.chat(history + ask("Now sum all of that up in one sentence."), 1)
        warm, _, _ = restarted.chat(history + ask("Now sum all of that up in two sentences."), 1)
        restarted.stop()
        cold_server = Server(home, port, disk_mb=0)
        cold_server.load()
        cold, _, _ = cold_server.chat(history + ask("Now sum all of that up in one sentence."), 1)
        cold_server.stop()
    return {"warm_s": warm, "after_restart_s": after_restart, "cold_s": cold,
            "prompt_tokens": final.get("prompt_eval_count", 0)}


def _modelfile(home: Path, model: Path) -> Path:
    path = home / "Modelfile"
    path.write_text(f"FROM {model}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--turns", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=11591)
    args = parser.parse_args()
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT))
        from tests.model_cache import ensure

        model = ensure("qwen2.5-coder")
    rounds = [one_round(model, args.turns, args.port) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"{model.name}, turn {args.turns}, {med['prompt_tokens']:.0f}-token prompt, median of {args.rounds} rounds")
    print("| measure | TTFT ms | vs warm |")
    print("|---|---|---|")
    for key, label in (("warm_s", "warm (in its slot)"), ("after_restart_s", "after a restart (disk tier)"),
                       ("cold_s", "cold (evaluated whole)")):
        print(f"| {label} | {med[key] * 1e3:.0f} | {med[key] / med['warm_s']:.2f} |")
    print(json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    main()
