"""The ``a3s-power`` command line, shaped like Ollama's."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from ..errors import A3SPowerError
from ..version import __version__


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="a3s-power", message="a3s-power version is %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Large language model runner"""
    from ..config import get_config  # here, not above: --version answers without pydantic

    level = get_config().debug
    logging.basicConfig(level=logging.DEBUG if level else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


class _ServeCommand(click.Command):
    """``serve --help`` lists the settings, as ``ollama serve --help`` lists its environment variables."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..config import SETTINGS
        from ..settings import help_rows

        env_rows, toml_rows = help_rows(SETTINGS)
        with formatter.section("Environment Variables"):
            formatter.write_dl(env_rows)
        with formatter.section("config.toml keys (in $A3S_POWER_HOME)"):
            formatter.write_dl(toml_rows)


@main.command(cls=_ServeCommand)
@click.option("--host", help="Address to listen on (default from OLLAMA_HOST, 127.0.0.1)")
@click.option("--port", type=int, help="Port to listen on (default from OLLAMA_HOST, 11434)")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate chain (PEM; default from A3S_POWER_TLS_CERT)")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM; default from A3S_POWER_TLS_KEY)")
def serve(host: str | None, port: int | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Start the server"""
    from ..config import get_config
    from ..server.serve import serve as run_server

    config = get_config()
    flags = {name: value for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key)) if value is not None}
    try:
        asyncio.run(run_server(config.model_copy(update=flags) if flags else config, host, port))
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
@click.option("--keepalive", help="Duration to keep a model loaded (e.g. 5m)")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically")
@click.option("--format", "fmt", help="Response format (e.g. json)")
@click.option("--think", "think", is_flag=False, flag_value="true", default=None,
              help="Enable thinking mode: true/false or high/medium/low")
@click.option("--hidethinking", is_flag=True, help="Hide thinking output (if provided)")
@click.option("--dimensions", type=int, help="Truncate output embeddings to this size (embedding models)")
@click.option("--truncate/--no-truncate", default=None,
              help="Truncate inputs that exceed the context (embedding models)")
def run(model: str, prompt: tuple[str, ...], prompt_option: str | None, system: str | None, verbose: bool,
        keepalive: str | None, insecure: bool, nowordwrap: bool, fmt: str | None, think: str | None,
        hidethinking: bool, dimensions: int | None, truncate: bool | None) -> None:
    """Run a model"""
    import aiohttp

    from .connect import connection_error
    from .run import run_model

    text = prompt_option if prompt_option is not None else " ".join(prompt)
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
    think_value = {"true": True, "false": False}.get(think, think) if think is not None else None
    try:
        asyncio.run(run_model(model, text, system, verbose, keepalive, insecure, fmt, think_value, hidethinking,
                              not nowordwrap, dimensions, truncate))
    except A3SPowerError as e:
        from ..client import ClientError
        from .models import say_sign_in

        if isinstance(e, ClientError) and e.status == 401:  # a cloud model, and this machine not signed in
            say_sign_in("Ollama to run Cloud models", e.signin_url)
            return
        _fail(str(e))
    except aiohttp.ClientError as e:  # the server cannot be reached, or its certificate is not trusted
        _fail(connection_error(e))
    except KeyboardInterrupt:
        sys.exit(130)


def _register_commands() -> None:
    from . import models

    models.register(main)


_register_commands()

if __name__ == "__main__":
    main()
