"""Errors as each API shapes them, and the middleware that turns any failure into one.

Ollama's routes answer ``{"error": "..."}``; the OpenAI routes answer OpenAI error objects and the
Anthropic route Anthropic's. No traceback ever reaches a client: unexpected failures are logged
here and answered with a plain 500.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from typing import Any

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..errors import A3SPowerError, RemoteError
from ..store.types import StoreFull, is_no_space
from .state import STATE

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param


def validated(kind: type[BaseModel], data: dict[str, Any]) -> Any:
    """A request type (a3s_power.api) from a wire API's fields; a value of the wrong type is a 400
    that names it, in the API's own error shape."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ApiError(400, f"invalid value for {where}: {error['msg']}", param=where or None) from None


def flavour(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return "native"


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
                 503: "service_unavailable"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}


def error_body(path: str, status: int, message: str, kind: str | None = None, param: str | None = None) -> dict:
    style = flavour(path)
    if style == "openai":
        return {"error": {"message": message, "type": kind or _OPENAI_TYPES.get(status, "api_error"),
                          "param": param, "code": None}}
    if style == "anthropic":
        return {"type": "error", "error": {"type": kind or _ANTHROPIC_TYPES.get(status, "api_error"),
                                           "message": message}}
    return {"error": message}


def error_response(request: web.Request, status: int, message: str, kind: str | None = None,
                   param: str | None = None) -> web.Response:
    return web.json_response(error_body(request.path, status, message, kind, param), status=status)


def status_for(exc: BaseException, store_root: Any = None) -> tuple[int, str]:
    """The HTTP status and message for an exception the API layer lets through, on every route:
    the package's errors carry their own status (``A3SPowerError.http_status``); a full disk is
    507; other file system failures are the model store's."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if is_no_space(exc):
        log.warning("model store full: %s", exc)
        return StoreFull.http_status, str(StoreFull(store_root or "the model store"))
    if isinstance(exc, A3SPowerError):
        return exc.http_status, str(exc)
    if isinstance(exc, OSError):
        if exc.errno == errno.ENAMETOOLONG:
            return 400, "invalid model name"
        log.warning("model store: %s", exc)
        return 500, f"model store: {exc.strerror if exc.errno is not None else exc}"
    return 500, "internal server error"


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:  # a raw request.read() past client_max_size
        return error_response(request, 413, _too_large(None, request))
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 405 and not exc.text:
            return error_response(request, exc.status, exc.reason)
        raise
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.kind, exc.param)
    except RemoteError as exc:
        body = error_body(request.path, exc.status, str(exc))
        if exc.signin_url and flavour(request.path) == "native":
            body["signin_url"] = exc.signin_url  # Ollama's clients offer it to the user
        return web.json_response(body, status=exc.status)
    except Exception as exc:  # the last line of defence
        status, message = status_for(exc)
        if status == 500 and not isinstance(exc, A3SPowerError):
            log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, status, message)


# The deepest nesting of arrays and objects a JSON body may have. Python's json parser recurses
# once per level (a body 100,000 levels deep overflows it), and so do the schema, template and
# option code behind it; no API request needs more than a few dozen levels.
MAX_JSON_DEPTH = 100

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes
_CHUNK = 1 << 20


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether UTF-8 JSON text nests arrays and objects more than ``limit`` levels deep, measured
    without recursion and at C speed: strings (escapes first) are cut out, the brackets left are
    counted, and only when there are more openers than ``limit`` is a running depth summed."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:  # escaped backslashes, then escaped quotes: what is left of escapes holds no quote
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(body.split(b'"')[::2])  # every other piece between quotes is a string's inside
    brackets = outside.translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        running = np.cumsum(steps[start:start + _CHUNK], dtype=np.int64) + depth
        if int(running.max()) > limit:
            return True
        depth = int(running[-1])
    return False


def max_body_bytes(request: web.Request) -> int:
    """The most bytes a JSON body may have (Config.max_body_mb, A3S_POWER_MAX_BODY_MB)."""
    state = request.app.get(STATE)
    mb = state.config.max_body_mb if state is not None else 100
    return int(mb) * 1024 * 1024


def _too_large(size: int | None, request: web.Request) -> str:
    limit = max_body_bytes(request)
    told = f" ({size} bytes)" if size and size > limit else ""
    return (f"request body too large{told}: the limit is {limit // (1024 * 1024)} MiB "
            "(A3S_POWER_MAX_BODY_MB)")


def _parse(body: bytes) -> Any:
    if json_too_deep(body):
        raise ApiError(400, f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    except RecursionError:  # cannot happen within MAX_JSON_DEPTH; a 400 all the same
        raise ApiError(400, f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, its size and nesting bounded: 413 for a body over the limit
    (from Content-Length before any of it is read, else while reading it), 400 for one nested
    deeper than MAX_JSON_DEPTH, missing, not JSON or not an object."""
    limit = max_body_bytes(request)
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, _too_large(request.content_length, request))
    try:
        body = await request.read()  # aiohttp stops past client_max_size, which create_app sets to the limit
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, _too_large(None, request)) from None
    if len(body) > limit:
        raise ApiError(413, _too_large(len(body), request))
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        encoding = json.detect_encoding(body)
        if encoding not in ("utf-8", "utf-8-sig"):  # UTF-16 or UTF-32, which json.loads also takes
            body = body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except (UnicodeError, LookupError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    # Past a megabyte, measuring and parsing take long enough to keep off the event loop.
    data = await asyncio.to_thread(_parse, body) if len(body) > _CHUNK else _parse(body)
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data
