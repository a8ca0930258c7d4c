"""Model-management commands: pull, push, list/ls, show, rm/delete, cp, create.

Each is a client of the server at OLLAMA_HOST, and prints what Ollama's CLI prints: progress
bars for transfers, a ``NAME ID SIZE MODIFIED`` table, show's sections. Failures end the command
with a one-line ``Error: ...`` and a non-zero exit, a lost connection included; Ctrl-C ends it
quietly (exit status 130), never with a traceback.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from ..errors import A3SPowerError
from .connect import quietly_on_interrupt, stream_progress, with_server
from .format import ProgressPrinter, human_bytes, human_duration, human_time, parse_time, table

# --- commands -------------------------------------------------------------------------------------


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry"""
    with_server(lambda c: stream_progress(c, "/api/pull", {"model": model, "insecure": insecure}))


def say_sign_in(reason: str, signin_url: str | None) -> None:
    """Ollama's words when a 401 needs this machine connected to an ollama.com account."""
    click.echo(f"You need to be signed in to {reason}.\n")
    if signin_url:
        click.echo(f"To sign in, navigate to:\n    {signin_url}\n\n", nl=False)


async def _whoami(client: Client, reason: str) -> dict | None:
    """The ollama.com account this machine's key is connected to; None after saying how to sign in."""
    try:
        return await client.request("POST", "/api/me")
    except ClientError as exc:
        if exc.status != 401:
            raise
        say_sign_in(reason, exc.signin_url)
        return None


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def push(model: str, insecure: bool) -> None:
    """Push a model to a registry"""
    from ..store.names import parse_name

    async def work(client: Client) -> None:
        try:
            host = parse_name(model).host
        except A3SPowerError:
            host = ""  # the server reports the bad name
        if host.endswith((".ollama.ai", ".ollama.com")) and await _whoami(client, "push models to ollama.com") is None:
            return
        await stream_progress(client, "/api/push", {"model": model, "insecure": insecure})

    with_server(work)


@click.command()
def signin() -> None:
    """Sign in to ollama.com"""

    async def work(client: Client) -> None:
        user = await _whoami(client, "Ollama to run Cloud models")
        if user and user.get("name"):
            click.echo(f"You are already signed in as user '{user['name']}'\n")

    with_server(work)


@click.command()
def signout() -> None:
    """Sign out from ollama.com"""

    async def work(client: Client) -> None:
        try:
            await client.request("POST", "/api/signout")
        except ClientError as exc:
            if exc.status != 401:
                raise
            click.echo("You are not signed in to ollama.com\n")
            return
        click.echo("You have signed out of ollama.com\n")

    with_server(work)


@click.command("list")
def list_models() -> None:
    """List models"""

    async def work(client: Client) -> None:
        data = await client.request("GET", "/api/tags")
        rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
        for m in data.get("models", []):
            rows.append([m["name"], m.get("digest", "")[:12], human_bytes(m.get("size", 0)),
                         human_time(parse_time(m.get("modified_at")))])
        click.echo(table(rows))

    with_server(work)


@click.command()
@click.argument("models", nargs=-1, required=True)
def rm(models: tuple[str, ...]) -> None:
    """Remove a model"""

    async def work(client: Client) -> None:
        for name in models:
            await client.request("DELETE", "/api/delete", {"model": name})
            click.echo(f"deleted '{name}'")

    with_server(work)


@click.command()
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy a model"""

    async def work(client: Client) -> None:
        await client.request("POST", "/api/copy", {"source": source, "destination": destination})
        click.echo(f"copied '{source}' to '{destination}'")

    with_server(work)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else "" for line in text.splitlines())


def render_show(info: dict[str, Any]) -> str:
    """Ollama's ``show`` summary: Model, Capabilities, Parameters, System and License sections."""
    details = info.get("details") or {}
    model_info = info.get("model_info") or {}
    arch = model_info.get("general.architecture") or details.get("family", "")
    rows = [["architecture", str(arch)], ["parameters", str(details.get("parameter_size", ""))]]
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        if (value := model_info.get(f"{arch}.{key}")) is not None:
            rows.append([label, str(value)])
    rows.append(["quantization", str(details.get("quantization_level", ""))])
    if requires := info.get("requires"):  # the least Ollama version the model's config asks for
        rows.append(["requires", str(requires)])
    sections = ["  Model\n" + _indent(table(rows))]
    if caps := info.get("capabilities"):
        sections.append("  Capabilities\n" + _indent("\n".join(caps)))
    if proj := info.get("projector_info"):
        prows = [["architecture", str(proj.get("general.architecture", ""))]]
        if (count := proj.get("general.parameter_count")) is not None:
            from ..store.details import human_number

            prows.append(["parameters", human_number(int(count))])
        sections.append("  Projector\n" + _indent(table(prows)))
    if params := info.get("parameters"):
        prows = [line.split(None, 1) for line in params.splitlines() if line.strip()]
        sections.append("  Parameters\n" + _indent(table([[r[0], r[1] if len(r) > 1 else ""] for r in prows])))
    if system := info.get("system"):
        lines = system.strip().splitlines()
        sections.append("  System\n" + _indent("\n".join(lines[:2] + (["..."] if len(lines) > 2 else []))))
    if license_text := info.get("license"):
        lines = license_text.strip().splitlines()
        sections.append("  License\n" + _indent("\n".join(lines[:2] + (["..."] if len(lines) > 2 else []))))
    return "\n\n".join(sections) + "\n"


def render_verbose(info: dict[str, Any]) -> str:
    out = []
    if model_info := info.get("model_info"):
        rows = [[k, str(v)] for k, v in model_info.items()]
        out.append("  Metadata\n" + _indent(table(rows)))
    if tensors := info.get("tensors"):
        rows = [[t["name"], t["type"], str(t["shape"])] for t in tensors]
        out.append("  Tensors\n" + _indent(table(rows)))
    return "\n\n".join(out) + ("\n" if out else "")


@click.command()
@click.argument("model")
@click.option("--license", "show_license", is_flag=True, help="Show license of a model")
@click.option("--modelfile", is_flag=True, help="Show Modelfile of a model")
@click.option("--parameters", is_flag=True, help="Show parameters of a model")
@click.option("--template", is_flag=True, help="Show template of a model")
@click.option("--system", is_flag=True, help="Show system message of a model")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed model information")
def show(model: str, show_license: bool, modelfile: bool, parameters: bool, template: bool, system: bool,
         verbose: bool) -> None:
    """Show information for a model"""
    chosen = [k for k, on in (("license", show_license), ("modelfile", modelfile), ("parameters", parameters),
                              ("template", template), ("system", system)) if on]
    if len(chosen) > 1:
        click.echo("Error: only one of '--license', '--modelfile', '--parameters', '--system', or '--template' "
                   "can be specified", err=True)
        sys.exit(1)

    async def work(client: Client) -> None:
        info = await client.request("POST", "/api/show", {"model": model, "verbose": verbose})
        if chosen:
            field = chosen[0]
            value = info.get(field)
            if not value:
                click.echo(f"No {field} was specified for this model.")
            else:
                click.echo(value.rstrip("\n"))
            return
        click.echo(render_show(info), nl=False)
        if verbose:
            click.echo("\n" + render_verbose(info), nl=False)

    with_server(work)


async def _upload(client: Client, digest: str, path: Path, printer: ProgressPrinter) -> None:
    """Sends a local file as a blob unless the server has it (HEAD first), as Ollama's CLI does."""
    url, headers = client.signed("HEAD", f"/api/blobs/{digest}")
    async with client.session.head(url, headers=headers) as resp:
        if resp.status == 200:
            return
    size = path.stat().st_size
    label = f"copying file {digest}"
    sent = 0

    async def body():
        nonlocal sent
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                sent += len(block)
                printer.update({"status": label, "total": size, "completed": sent})
                yield block

    url, headers = client.signed("POST", f"/api/blobs/{digest}")
    async with client.session.post(url, data=body(), headers={**headers, "Content-Length": str(size)}) as resp:
        await Client._raise_for(resp)
    printer.update({"status": label, "total": size, "completed": size})


@click.command()
@click.argument("model")
@click.option("-f", "--file", "modelfile", default="Modelfile", show_default=True,
              help="Name of the Modelfile")
@click.option("-q", "--quantize", default=None, help="Quantize model to this level (e.g. q4_K_M)")
def create(model: str, modelfile: str, quantize: str | None) -> None:
    """Create a model from a Modelfile"""
    from ..store.modelfile import ModelfileError, create_plan, parse_modelfile

    path = Path(modelfile).expanduser()
    try:
        text = quietly_on_interrupt(lambda: path.read_text(encoding="utf-8"))
    except OSError as exc:
        click.echo(f"Error: {exc.strerror}: {path}", err=True)
        sys.exit(1)
    try:
        click.echo("gathering model components", err=True)
        plan = quietly_on_interrupt(lambda: create_plan(parse_modelfile(text), path.resolve().parent))
    except (ModelfileError, A3SPowerError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a file the Modelfile names could not be read
        click.echo(f"Error: {exc.strerror}: {exc.filename}" if exc.filename else f"Error: {exc}", err=True)
        sys.exit(1)
    body = {"model": model, **plan.body}
    if quantize:
        body["quantize"] = quantize

    async def work(client: Client) -> None:
        printer = ProgressPrinter()
        try:
            for digest, file in plan.uploads.items():
                await _upload(client, digest, file, printer)
            async for item in client.stream("POST", "/api/create", body):
                printer.update(item)
        finally:
            printer.finish()

    with_server(work)


def _processor(size: int, vram: int) -> str:
    """Ollama's PROCESSOR column: where a model's memory is, its CPU share rounded."""
    if vram <= 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if vram > size or size <= 0:
        return "Unknown"
    cpu = int(100 * (size - vram) / size + 0.5)  # Go's math.Round, not Python's half-to-even
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _until(expires: str | None) -> str:
    when = parse_time(expires)
    if when is None:
        return "Stopping..."
    remaining = (when - datetime.now(timezone.utc)).total_seconds()
    if remaining > 20 * 365 * 86400:
        return "Forever"
    if remaining <= 0:
        return "Stopping..."
    return human_duration(remaining) + " from now"


def _slot_rows(runners: list[dict[str, Any]]) -> list[list[str]]:
    """/api/slots as a table: a row per slot, or per runner where the server cannot tell its
    slots apart."""
    rows = [["NAME", "KIND", "SLOT", "STATE", "CACHED", "GENERATED"]]
    for r in runners:
        if r.get("slots") is None:
            rows.append([r["name"], r["kind"], "*", f"{r['busy']} of {r['total']} busy", "-", "-"])
            continue
        for slot in r["slots"]:
            rows.append([r["name"], r["kind"], str(slot["id"]), "busy" if slot["busy"] else "idle",
                         str(slot["cached_tokens"]), str(slot["generated"])])
    return rows


@click.command()
@click.option("--slots", "show_slots", is_flag=True, help="Show each slot of the running models")
def ps(show_slots: bool) -> None:
    """List running models"""

    async def slot_table(client: Client) -> None:
        runners = (await client.request("GET", "/api/slots"))["models"]
        click.echo(table(_slot_rows(runners)))
        for r in runners:
            if r.get("queued"):
                click.echo(f"{r['name']} ({r['kind']}): {r['queued']} waiting for a slot")

    async def work(client: Client) -> None:
        if show_slots:
            await slot_table(client)
            return
        running = (await client.request("GET", "/api/ps"))["models"]
        rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
        for m in running:
            rows.append([m["name"], (m.get("digest") or "")[:12], human_bytes(m.get("size", 0)),
                         _processor(m.get("size", 0), m.get("size_vram", 0)), str(m.get("context_length", "")),
                         _until(m.get("expires_at"))])
        click.echo(table(rows))

    with_server(work)


@click.command()
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model"""

    async def work(client: Client) -> None:
        try:
            await client.request("POST", "/api/generate", {"model": model, "keep_alive": 0})
        except ClientError as exc:
            if exc.status == 404:
                raise A3SPowerError(f'couldn\'t find model "{model}" to stop') from None
            raise

    with_server(work)


def register(main: click.Group) -> None:
    """Adds the model commands (with Ollama's aliases) to the ``a3s-power`` group."""
    for command in (pull, push, list_models, show, rm, cp, create, ps, stop, signin, signout):
        main.add_command(command)

    @main.command(name="help")
    @click.argument("command", required=False)
    @click.pass_context
    def help_command(ctx: click.Context, command: str | None) -> None:
        """Help about any command"""
        target = main.get_command(ctx, command) if command else main
        if target is None:
            raise click.UsageError(f"unknown command \"{command}\" for \"a3s-power\"")
        with click.Context(target, info_name=command or "a3s-power", parent=ctx.parent) as sub:
            click.echo(target.get_help(sub))
    main.add_command(list_models, "ls")
    main.add_command(rm, "delete")
    for command, alias in ((signin, "login"), (signout, "logout")):  # hidden, as in Ollama
        main.add_command(click.Command(alias, callback=command.callback, help=command.help, hidden=True))
