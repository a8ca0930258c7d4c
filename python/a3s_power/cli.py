"""The ``a3s-power`` command line, shaped like Ollama's."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from .errors import A3SPowerError
from .version import __version__


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _format_duration(ns: int) -> str:
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


def _print_timings(total_ns: int, load_ns: int, timings: dict) -> None:
    """Ollama's --verbose block."""
    lines = [
        ("total duration", _format_duration(total_ns)),
        ("load duration", _format_duration(load_ns)),
        ("prompt eval count", f"{timings.get('prompt_eval_count', 0)} token(s)"),
        ("prompt eval duration", _format_duration(timings.get("prompt_eval_duration", 0))),
    ]
    if timings.get("prompt_eval_duration"):
        rate = timings["prompt_eval_count"] / (timings["prompt_eval_duration"] / 1e9)
        lines.append(("prompt eval rate", f"{rate:.2f} tokens/s"))
    lines += [
        ("eval count", f"{timings.get('eval_count', 0)} token(s)"),
        ("eval duration", _format_duration(timings.get("eval_duration", 0))),
    ]
    if timings.get("eval_duration"):
        rate = timings["eval_count"] / (timings["eval_duration"] / 1e9)
        lines.append(("eval rate", f"{rate:.2f} tokens/s"))
    for name, value in lines:
        click.echo(f"{name + ':':<22}{value}", err=True)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="a3s-power", message="a3s-power version is %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Large language model runner"""
    from .config import get_config

    level = get_config().debug
    logging.basicConfig(level=logging.DEBUG if level else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@click.option("--host", help="Address to listen on (default from OLLAMA_HOST, 127.0.0.1)")
@click.option("--port", type=int, help="Port to listen on (default from OLLAMA_HOST, 11434)")
def serve(host: str | None, port: int | None) -> None:
    """Start the server"""
    from .config import get_config
    from .server.serve import serve as run_server

    try:
        asyncio.run(run_server(get_config(), host, port))
    except OSError as e:
        _fail(str(e))
    except A3SPowerError as e:
        _fail(str(e))


@main.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--prompt", "-p", "prompt_option", help="Prompt to answer (instead of the PROMPT argument)")
@click.option("--system", help="System message")
@click.option("--verbose", is_flag=True, help="Show timings for the response")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically")
def run(model: str, prompt: tuple[str, ...], prompt_option: str | None, system: str | None, verbose: bool,
        nowordwrap: bool) -> None:
    """Run a model"""
    text = prompt_option if prompt_option is not None else " ".join(prompt)
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
    try:
        asyncio.run(_run(model, text, system, verbose))
    except A3SPowerError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        sys.exit(130)


async def _run(model_ref: str, prompt: str, system: str | None, verbose: bool) -> None:
    import time

    from .engine.options import defaults, replace_load
    from .engine.runner import LoadedModel
    from .prompt.build import chat_prompt

    path = Path(model_ref).expanduser()
    if not path.exists():
        raise A3SPowerError(f"model '{model_ref}' not found")
    options = replace_load(defaults(), num_parallel=1)
    started = time.perf_counter_ns()
    with LoadedModel(str(path), options.load) as loaded:
        messages: list[dict] = [{"role": "system", "content": system}] if system else []

        async def answer(user_text: str) -> str:
            messages.append({"role": "user", "content": user_text})
            tokens = loaded.tokenize_prompt(chat_prompt(loaded, messages))
            reply = []
            timings: dict = {}
            t0 = time.perf_counter_ns()
            async for chunk in loaded.generate(tokens, options):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                reply.append(chunk.text)
                if chunk.done:
                    timings = chunk.timings
            sys.stdout.write("\n")
            if verbose:
                _print_timings(time.perf_counter_ns() - (started if len(messages) <= 2 else t0),
                               loaded.load_duration_ns if len(messages) <= 2 else 0, timings)
            messages.append({"role": "assistant", "content": "".join(reply)})
            return "".join(reply)

        if prompt:
            await answer(prompt)
            return
        # A plain conversation until end of input; the full interactive mode is the CLI issue's.
        while True:
            try:
                line = await asyncio.to_thread(input, ">>> ")
            except EOFError:
                sys.stdout.write("\n")
                return
            if line.strip() in ("/bye", "/exit"):
                return
            if line.strip():
                await answer(line)


if __name__ == "__main__":
    main()
