"""The web page at ``/ui``: chat, models and usage, as static files from the package (``webui/``).

Plain HTML, CSS and JavaScript modules, no build step and nothing fetched from another origin: the
page reads the same APIs every client uses (``/api/*``, ``/v1/usage``, ``/metrics``), with the API
key the user typed in (kept in the browser, sent as ``Authorization: Bearer``). The files hold no
data, so they are served to anyone who may reach the server; everything they show comes through
the APIs and their checks.

A strict Content-Security-Policy stands behind the page's own care with untrusted text (a model's
answer is rendered as DOM nodes, never as HTML): scripts, styles and connections from this origin
only, images from it or from ``data:``/``blob:`` URLs (attachments), no frames and no plugins.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

FILES = Path(__file__).with_name("webui")
PREFIX = "/ui"

_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon", ".json": "application/json"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated each time: an upgraded server serves its own page
}


def _catalogue() -> dict[str, Path]:
    """The files the page is made of, by name; nothing else under /ui/ is served."""
    return {p.name: p for p in sorted(FILES.iterdir()) if p.is_file() and p.suffix in _TYPES}


_TEXT = (".html", ".css", ".js", ".json", ".svg")


def _file_response(path: Path) -> web.Response:
    kind = _TYPES[path.suffix] + ("; charset=utf-8" if path.suffix in _TEXT else "")
    return web.Response(body=path.read_bytes(), headers={**HEADERS, "Content-Type": kind})


def setup(app: web.Application) -> None:
    files = _catalogue()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(PREFIX + "/")

    async def index(request: web.Request) -> web.Response:
        return _file_response(files["index.html"])

    async def asset(request: web.Request) -> web.Response:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="not found")
        return _file_response(path)

    app.router.add_get(PREFIX, redirect)
    app.router.add_get(PREFIX + "/", index)
    app.router.add_get(PREFIX + "/{name}", asset)
