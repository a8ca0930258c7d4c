"""``a3s-power run``: answer a prompt or hold a conversation, as ``ollama run`` does.

A path to a .gguf file runs in this process; a model name goes to the server at OLLAMA_HOST,
which is started in the background first when none answers, and the model pulled when missing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import click

from .client import Client, ClientError
from .config import get_config
from .errors import A3SPowerError


class LocalChat:
    """A conversation with a GGUF file loaded in this process."""

    def __init__(self, path: Path) -> None:
        from .engine.options import defaults, replace_load
        from .engine.runner import LoadedModel

        self.options = replace_load(defaults(), num_parallel=1)
        started = time.perf_counter_ns()
        self.model = LoadedModel(str(path), self.options.load)
        self.load_ns = time.perf_counter_ns() - started

    async def stream(self, messages: list[dict], options: dict[str, Any]) -> AsyncIterator[tuple[str, dict]]:
        from .engine.options import parse_options
        from .prompt.build import chat_prompt

        opts = parse_options(options, self.options)
        tokens = self.model.tokenize_prompt(chat_prompt(self.model, messages))
        async for chunk in self.model.generate(tokens, opts):
            metrics = {}
            if chunk.done:
                t = chunk.timings
                metrics = {"load_duration": self.load_ns, "prompt_eval_count": t["prompt_eval_count"],
                           "prompt_eval_duration": t["prompt_eval_duration"], "eval_count": t["eval_count"],
                           "eval_duration": t["eval_duration"]}
                self.load_ns = 0
            yield chunk.text, metrics

    async def close(self) -> None:
        self.model.close()


class RemoteChat:
    """A conversation through the server's /api/chat."""

    def __init__(self, client: Client, model: str, keep_alive: str | None) -> None:
        self.client = client
        self.name = model
        self.keep_alive = keep_alive

    async def stream(self, messages: list[dict], options: dict[str, Any]) -> AsyncIterator[tuple[str, dict]]:
        body: dict[str, Any] = {"model": self.name, "messages": messages, "options": options}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        async for item in self.client.stream("POST", "/api/chat", body):
            yield item.get("message", {}).get("content", ""), item if item.get("done") else {}

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


async def ensure_server(client: Client) -> None:
    """Starts ``a3s-power serve`` in the background when nothing answers at OLLAMA_HOST."""
    if await client.heartbeat():
        return
    log_dir = get_config().home
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "server.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
    for _ in range(200):
        await asyncio.sleep(0.1)
        if await client.heartbeat():
            return
    raise A3SPowerError(f"could not start the server; see {log_dir / 'server.log'}")


async def pull_with_progress(client: Client, model: str, insecure: bool) -> None:
    last = ""
    async for item in client.stream("POST", "/api/pull", {"model": model, "insecure": insecure}):
        status = item.get("status", "")
        if item.get("total"):
            pct = 100 * item.get("completed", 0) // max(item["total"], 1)
            click.echo(f"\r{status} {pct:3d}%", nl=False, err=True)
            last = status
        else:
            if last:
                click.echo("", err=True)
                last = ""
            click.echo(status, err=True)


def format_duration(ns: int) -> str:
    """A duration as Go's time.Duration prints it, which is what Ollama shows."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3f}".rstrip("0").rstrip(".") + "µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def print_timings(total_ns: int, metrics: dict) -> None:
    """Ollama's --verbose block."""
    lines = [("total duration", format_duration(total_ns)),
             ("load duration", format_duration(metrics.get("load_duration", 0))),
             ("prompt eval count", f"{metrics.get('prompt_eval_count', 0)} token(s)"),
             ("prompt eval duration", format_duration(metrics.get("prompt_eval_duration", 0)))]
    if metrics.get("prompt_eval_duration"):
        rate = metrics["prompt_eval_count"] / (metrics["prompt_eval_duration"] / 1e9)
        lines.append(("prompt eval rate", f"{rate:.2f} tokens/s"))
    lines += [("eval count", f"{metrics.get('eval_count', 0)} token(s)"),
              ("eval duration", format_duration(metrics.get("eval_duration", 0)))]
    if metrics.get("eval_duration"):
        rate = metrics["eval_count"] / (metrics["eval_duration"] / 1e9)
        lines.append(("eval rate", f"{rate:.2f} tokens/s"))
    for name, value in lines:
        click.echo(f"{name + ':':<22}{value}", err=True)


HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /clear                 Clear session context
  /bye                   Exit
  /?, /help              Help for a command

Use \"\"\" to begin a multi-line message.
"""


async def run_model(model: str, prompt: str, system: str | None, verbose: bool, keep_alive: str | None,
                    insecure: bool) -> None:
    path = Path(model).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.exists():
            raise A3SPowerError(f"model '{model}' not found")
        chat = LocalChat(path)
    else:
        client = Client(get_config().host)
        await client.__aenter__()
        await ensure_server(client)
        try:
            await client.request("POST", "/api/show", {"model": model})
        except ClientError as exc:
            if exc.status != 404:
                raise
            await pull_with_progress(client, model, insecure)
        chat = RemoteChat(client, model, keep_alive)
    try:
        await converse(chat, prompt, system, verbose)
    finally:
        await chat.close()


async def converse(chat, prompt: str, system: str | None, verbose: bool) -> None:
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    options: dict[str, Any] = {}

    async def answer(text: str) -> None:
        messages.append({"role": "user", "content": text})
        started = time.perf_counter_ns()
        reply: list[str] = []
        metrics: dict = {}
        async for piece, done in chat.stream(messages, options):
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply.append(piece)
            metrics = done or metrics
        sys.stdout.write("\n" if prompt else "\n\n")
        if verbose:
            print_timings(time.perf_counter_ns() - started, metrics)
        messages.append({"role": "assistant", "content": "".join(reply)})

    if prompt:
        await answer(prompt)
        return
    while True:
        try:
            line = await asyncio.to_thread(input, ">>> ")
        except EOFError:
            sys.stdout.write("\n")
            return
        if line.startswith('"""'):
            parts = [line[3:]]
            while not parts[-1].endswith('"""'):
                try:
                    parts.append(await asyncio.to_thread(input, "... "))
                except EOFError:
                    break
            line = "\n".join(parts)[:-3] if parts[-1].endswith('"""') else "\n".join(parts)
        command = line.strip()
        if command in ("/bye", "/exit"):
            return
        if command in ("/?", "/help"):
            click.echo(HELP)
        elif command == "/clear":
            messages[:] = [m for m in messages if m["role"] == "system"]
            click.echo("Cleared session context")
        elif command.startswith("/set system "):
            messages[:] = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": command[len("/set system "):]})
            click.echo("Set system message.")
        elif command.startswith("/set parameter "):
            fields = command.split(maxsplit=3)
            if len(fields) < 4:
                click.echo("Usage: /set parameter <name> <value>")
                continue
            name, value = fields[2], fields[3]
            options[name] = value.split() if name == "stop" else value
            click.echo(f"Set parameter '{name}' to '{value}'")
        elif command == "/set verbose":
            verbose = True
            click.echo("Set 'verbose' mode.")
        elif command == "/set quiet":
            verbose = False
            click.echo("Set 'quiet' mode.")
        elif command.startswith("/"):
            click.echo(f"Unknown command '{command.split()[0]}'. Type /? for help")
        elif command:
            try:
                await answer(line)
            except (ClientError, A3SPowerError) as exc:
                messages.pop()
                click.echo(f"Error: {exc}", err=True)
