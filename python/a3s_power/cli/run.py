"""``a3s-power run``: answer a prompt or hold a conversation, as ``ollama run`` does.

A path to a .gguf file runs in this process; a model name goes to the server at OLLAMA_HOST,
which is started in the background first when none answers, and the model pulled when missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from ..config import get_config
from ..errors import A3SPowerError
from ..timefmt import go_duration
from .connect import ensure_server, new_client, stream_progress
from .models import render_show

IMAGE_PATH = re.compile(r"""(?:^|\s)((?:~|\.{0,2}/|[A-Za-z]:\\)?[^\s'"]+\.(?:png|jpe?g|webp|bmp|gif))\b""", re.I)
DIM, RESET = "\033[2m", "\033[0m"


class LocalChat:
    """A conversation with a GGUF file loaded in this process."""

    capabilities = ["completion"]

    def __init__(self, path: Path) -> None:
        from ..engine.options import defaults, replace_load
        from ..engine.runner import LoadedModel

        self.name = str(path)
        self.options = replace_load(defaults(), num_parallel=1)
        started = time.perf_counter_ns()
        self.model = LoadedModel(str(path), self.options.load)
        self.load_ns = time.perf_counter_ns() - started

    async def stream(self, messages: list[dict], options: dict[str, Any], **_: Any) -> AsyncIterator[dict]:
        from ..engine.options import parse_options
        from ..prompt.build import chat_prompt

        opts = parse_options(options, self.options)
        tokens = self.model.tokenize_prompt(chat_prompt(self.model, messages))
        async for chunk in self.model.generate(tokens, opts):
            item: dict[str, Any] = {"message": {"content": chunk.text}, "done": chunk.done}
            if chunk.done:
                t = chunk.timings
                item.update(load_duration=self.load_ns, prompt_eval_count=t["prompt_eval_count"],
                            prompt_eval_duration=t["prompt_eval_duration"], eval_count=t["eval_count"],
                            eval_duration=t["eval_duration"])
                self.load_ns = 0
            yield item

    async def close(self) -> None:
        self.model.close()


class RemoteChat:
    """A conversation through the server's /api/chat."""

    def __init__(self, client: Client, model: str, keep_alive: str | None, info: dict) -> None:
        self.client = client
        self.name = model
        self.keep_alive = keep_alive
        self.info = info

    @property
    def capabilities(self) -> list[str]:
        return self.info.get("capabilities") or ["completion"]

    async def stream(self, messages: list[dict], options: dict[str, Any], fmt: str | None = None,
                     think: Any = None) -> AsyncIterator[dict]:
        body: dict[str, Any] = {"model": self.name, "messages": messages, "options": options}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if fmt:
            body["format"] = fmt
        if think is not None:
            body["think"] = think
        async for item in self.client.stream("POST", "/api/chat", body):
            yield item

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


def print_timings(total_ns: int, metrics: dict) -> None:
    """Ollama's --verbose block."""
    lines = [("total duration", go_duration(total_ns)),
             ("load duration", go_duration(metrics.get("load_duration", 0))),
             ("prompt eval count", f"{metrics.get('prompt_eval_count', 0)} token(s)"),
             ("prompt eval duration", go_duration(metrics.get("prompt_eval_duration", 0)))]
    if metrics.get("prompt_eval_duration"):
        rate = metrics["prompt_eval_count"] / (metrics["prompt_eval_duration"] / 1e9)
        lines.append(("prompt eval rate", f"{rate:.2f} tokens/s"))
    lines += [("eval count", f"{metrics.get('eval_count', 0)} token(s)"),
              ("eval duration", go_duration(metrics.get("eval_duration", 0)))]
    if metrics.get("eval_duration"):
        rate = metrics["eval_count"] / (metrics["eval_duration"] / 1e9)
        lines.append(("eval rate", f"{rate:.2f} tokens/s"))
    for name, value in lines:
        click.echo(f"{name + ':':<22}{value}", err=True)


class WordWrapper:
    """Streams text to the terminal, breaking lines between words at the terminal's width."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stdout.isatty()
        self.width = shutil.get_terminal_size().columns
        self.column = 0
        self.word = ""

    def write(self, text: str) -> None:
        if not self.enabled:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        for ch in text:
            if ch == "\n":
                self._flush_word()
                sys.stdout.write("\n")
                self.column = 0
            elif ch == " ":
                self._flush_word()
                if self.column < self.width:
                    sys.stdout.write(" ")
                    self.column += 1
            else:
                self.word += ch
        sys.stdout.flush()

    def _flush_word(self) -> None:
        if not self.word:
            return
        if self.column + len(self.word) > self.width and self.column > 0:
            sys.stdout.write("\n")
            self.column = 0
        sys.stdout.write(self.word)
        self.column += len(self.word)
        self.word = ""

    def finish(self) -> None:
        self._flush_word()
        sys.stdout.flush()


class Spinner:
    """Ollama's braille spinner, on a terminal only, until the first token arrives."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None

    async def _spin(self) -> None:
        i = 0
        while True:
            sys.stderr.write("\r" + self.FRAMES[i % len(self.FRAMES)] + " ")
            sys.stderr.flush()
            i += 1
            await asyncio.sleep(0.1)

    def start(self) -> None:
        if sys.stderr.isatty():
            self.task = asyncio.get_running_loop().create_task(self._spin())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
            sys.stderr.write("\r  \r")
            sys.stderr.flush()


def extract_images(prompt: str) -> tuple[str, list[str]]:
    """Image files named in a prompt become attachments, as in ``ollama run``."""
    images = []
    for match in IMAGE_PATH.finditer(prompt):
        path = Path(os.path.expanduser(match.group(1)))
        if path.is_file():
            images.append(base64.b64encode(path.read_bytes()).decode())
            prompt = prompt.replace(match.group(1), "", 1)
            click.echo(f"Added image '{path}'", err=True)
    return prompt.strip(), images


class Session:
    """The state of one ``run``: model, messages and the /set switches."""

    def __init__(self, chat, system: str | None, verbose: bool, fmt: str | None, think: Any, hide_thinking: bool,
                 wordwrap: bool) -> None:
        self.chat = chat
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.options: dict[str, Any] = {}
        self.verbose = verbose
        self.format = fmt
        self.think = think
        self.hide_thinking = hide_thinking
        self.wordwrap = wordwrap
        self.current: asyncio.Task | None = None  # the answer being written, for Ctrl-C

    async def answer(self, text: str, interactive: bool) -> None:
        text, images = extract_images(text) if "vision" in self.chat.capabilities else (text, [])
        message: dict[str, Any] = {"role": "user", "content": text}
        if images:
            message["images"] = images
        self.messages.append(message)
        started = time.perf_counter_ns()
        out = WordWrapper(self.wordwrap)
        reply, thinking_open = [], False
        metrics: dict = {}
        spinner = Spinner()
        spinner.start()
        try:
            async for item in self.chat.stream(self.messages, self.options, fmt=self.format, think=self.think):
                spinner.stop()
                msg = item.get("message", {})
                if msg.get("thinking") and not self.hide_thinking:
                    if not thinking_open:
                        sys.stdout.write(f"{DIM}Thinking...\n" if sys.stdout.isatty() else "Thinking...\n")
                        thinking_open = True
                    out.write(msg["thinking"])
                if msg.get("content"):
                    if thinking_open:
                        out.finish()
                        sys.stdout.write(f"\n...done thinking.\n\n{RESET}" if sys.stdout.isatty()
                                         else "\n...done thinking.\n\n")
                        thinking_open = False
                    out.write(msg["content"])
                    reply.append(msg["content"])
                if item.get("done"):
                    metrics = item
        except (asyncio.CancelledError, KeyboardInterrupt):
            out.finish()
            sys.stdout.write("\n")
            self.messages.pop()
            raise
        finally:
            spinner.stop()
        out.finish()
        sys.stdout.write("\n\n" if interactive else "\n")
        sys.stdout.flush()
        if self.verbose:
            print_timings(time.perf_counter_ns() - started, metrics)
        self.messages.append({"role": "assistant", "content": "".join(reply)})


HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""


def _history_file() -> Path | None:
    if get_config().home and not get_config().nohistory:
        return get_config().home / "history"
    return None


async def _read_line(prompt: str) -> str:
    return await asyncio.to_thread(input, prompt)


async def run_model(model: str, prompt: str, system: str | None, verbose: bool, keep_alive: str | None,
                    insecure: bool, fmt: str | None = None, think: Any = None, hide_thinking: bool = False,
                    wordwrap: bool = True, dimensions: int | None = None, truncate: bool | None = None) -> None:
    path = Path(model).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.exists():
            raise A3SPowerError(f"model '{model}' not found")
        chat: LocalChat | RemoteChat = LocalChat(path)
    else:
        client = new_client()
        await client.__aenter__()
        try:
            info = await _show_or_pull(client, model, insecure)
        except BaseException:  # a refused key, an untrusted certificate: the session closes before the error
            await client.__aexit__(None, None, None)
            raise
        chat = RemoteChat(client, model, keep_alive, info)
        if "embedding" in chat.capabilities:
            try:
                await embed(client, model, prompt, dimensions, truncate)
            finally:
                await chat.close()
            return
    session = Session(chat, system, verbose, fmt, think, hide_thinking, wordwrap)
    try:
        if prompt:
            await session.answer(prompt, interactive=False)
        else:
            await converse(session)
    finally:
        await chat.close()


async def _show_or_pull(client: Client, model: str, insecure: bool) -> Any:
    """The model's /api/show, pulled first when the server does not have it (a server started first
    when none answers)."""
    await ensure_server(client)
    try:
        return await client.request("POST", "/api/show", {"model": model})
    except ClientError as exc:
        if exc.status != 404:
            raise
        await stream_progress(client, "/api/pull", {"model": model, "insecure": insecure})
        return await client.request("POST", "/api/show", {"model": model})


async def embed(client: Client, model: str, prompt: str, dimensions: int | None, truncate: bool | None) -> None:
    """For embedding models ``run`` prints the vector, as ``ollama run`` does."""
    if not prompt:
        raise A3SPowerError("embedding models require input text")
    body: dict[str, Any] = {"model": model, "input": prompt}
    if dimensions:
        body["dimensions"] = dimensions
    if truncate is not None:
        body["truncate"] = truncate
    result = await client.request("POST", "/api/embed", body)
    click.echo(json.dumps(result["embeddings"][0]))


async def converse(session: Session) -> None:
    # Ctrl-C stops the answer being written and returns to the prompt, as in ``ollama run``.
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        if session.current is not None and not session.current.done():
            session.current.cancel()
        else:
            click.echo("\nUse Ctrl + d or /bye to exit.")

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    except (NotImplementedError, RuntimeError):
        pass
    history = _history_file()
    try:
        import readline

        if history and history.exists():
            readline.read_history_file(str(history))
    except (ImportError, OSError):
        readline = None  # type: ignore[assignment]
    try:
        while True:
            try:
                line = await _read_line(">>> ")
            except EOFError:
                sys.stdout.write("\n")
                return
            except KeyboardInterrupt:
                click.echo("\nUse Ctrl + d or /bye to exit.")
                continue
            if line.startswith('"""'):
                parts = [line[3:]]
                while not parts[-1].endswith('"""'):
                    try:
                        parts.append(await _read_line("... "))
                    except EOFError:
                        break
                text = "\n".join(parts)
                line = text[:-3] if text.endswith('"""') else text
            if await command(session, line.strip()):
                return
    finally:
        if readline is not None and history:
            try:
                history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(str(history))
            except OSError:
                pass


async def command(session: Session, line: str) -> bool:
    """Runs one line of input; True when the conversation is over."""
    if line in ("/bye", "/exit"):
        return True
    if line in ("/?", "/help"):
        click.echo(HELP)
    elif line in ("/? set", "/help set", "/set"):
        click.echo(SET_HELP)
    elif line == "/clear":
        session.messages[:] = [m for m in session.messages if m["role"] == "system"]
        click.echo("Cleared session context")
    elif line.startswith("/set "):
        set_command(session, line[len("/set "):].strip())
    elif line.startswith("/show"):
        await show_command(session, line[len("/show"):].strip())
    elif line.startswith("/load "):
        await load_command(session, line[len("/load "):].strip())
    elif line.startswith("/save "):
        await save_command(session, line[len("/save "):].strip())
    elif line.startswith("/"):
        click.echo(f"Unknown command '{line.split()[0]}'. Type /? for help")
    elif line:
        task = session.current = asyncio.ensure_future(session.answer(line, interactive=True))
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the CLI itself is being cancelled
        except (ClientError, A3SPowerError) as exc:
            if session.messages and session.messages[-1]["role"] == "user":
                session.messages.pop()
            click.echo(f"Error: {exc}", err=True)
    return False


def set_command(session: Session, args: str) -> None:
    if args.startswith("parameter "):
        fields = args.split(maxsplit=2)
        if len(fields) < 3:
            click.echo("Usage: /set parameter <name> <value>")
            return
        name, value = fields[1], fields[2]
        session.options[name] = value.split() if name == "stop" else _typed(value)
        click.echo(f"Set parameter '{name}' to '{value}'")
    elif args.startswith("system "):
        session.messages[:] = [m for m in session.messages if m["role"] != "system"]
        session.messages.insert(0, {"role": "system", "content": args[len("system "):].strip().strip('"')})
        click.echo("Set system message.")
    elif args == "verbose":
        session.verbose = True
        click.echo("Set 'verbose' mode.")
    elif args == "quiet":
        session.verbose = False
        click.echo("Set 'quiet' mode.")
    elif args == "format json":
        session.format = "json"
        click.echo("Set format to 'json' mode.")
    elif args == "noformat":
        session.format = None
        click.echo("Disabled format.")
    elif args == "wordwrap":
        session.wordwrap = True
        click.echo("Set 'wordwrap' mode.")
    elif args == "nowordwrap":
        session.wordwrap = False
        click.echo("Set 'nowordwrap' mode.")
    elif args in ("history", "nohistory"):
        click.echo(f"Set '{args}' mode.")
    elif args.startswith("think"):
        level = args[len("think"):].strip()
        session.think = level or True
        click.echo(f"Set 'think' mode{' to ' + repr(level) if level else ''}.")
    elif args == "nothink":
        session.think = False
        click.echo("Set 'nothink' mode.")
    else:
        click.echo(f"Unknown command '/set {args}'. Type /? for help")


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


async def show_command(session: Session, what: str) -> None:
    if not isinstance(session.chat, RemoteChat):
        click.echo("/show needs a model served by the server")
        return
    info = await session.chat.client.request("POST", "/api/show", {"model": session.chat.name})
    if what in ("", "info"):
        click.echo(render_show(info))
    elif what in ("license", "modelfile", "parameters", "system", "template"):
        click.echo(info.get(what) or f"No {what} was specified for this model.")
    else:
        click.echo(f"Unknown command '/show {what}'. Type /? for help")


async def load_command(session: Session, name: str) -> None:
    if not isinstance(session.chat, RemoteChat):
        click.echo("/load needs the server")
        return
    try:
        info = await session.chat.client.request("POST", "/api/show", {"model": name})
    except ClientError as exc:
        click.echo(f"Error: {exc}", err=True)
        return
    session.chat = RemoteChat(session.chat.client, name, session.chat.keep_alive, info)
    session.messages[:] = [m for m in session.messages if m["role"] == "system"]
    click.echo(f"Loading model '{name}'")


async def save_command(session: Session, name: str) -> None:
    """Creates a model from the current one with the conversation as MESSAGEs."""
    if not isinstance(session.chat, RemoteChat):
        click.echo("/save needs the server")
        return
    body: dict[str, Any] = {"model": name, "from": session.chat.name, "stream": False,
                            "messages": [m for m in session.messages if m["role"] != "system"]}
    system = next((m["content"] for m in session.messages if m["role"] == "system"), None)
    if system:
        body["system"] = system
    if session.options:
        body["parameters"] = session.options
    try:
        await session.chat.client.request("POST", "/api/create", body)
    except ClientError as exc:
        click.echo(f"Error: {exc}", err=True)
        return
    click.echo(f"Created new model '{name}'")
