"""Errors as each API shapes them, and the middleware that turns any failure into one.

Ollama's routes answer ``{"error": "..."}``; the OpenAI routes answer OpenAI error objects and the
Anthropic route Anthropic's. No traceback ever reaches a client: unexpected failures are logged
here and answered with a plain 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from ..errors import A3SPowerError, InvalidOptionError, ModelLoadError, RemoteError
from ..prompt.chat_template import TemplateError
from ..engine.scheduler import QueueFull
from ..store.types import InvalidModelName, ModelNotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param


def flavour(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return "native"


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error", 503: "service_unavailable"}
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


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message for an exception the API layer lets through."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, ModelNotFound):
        return 404, str(exc)
    if isinstance(exc, (InvalidOptionError, InvalidModelName, TemplateError)):
        return 400, str(exc)
    if isinstance(exc, ModelLoadError):
        return 500, str(exc)
    if isinstance(exc, QueueFull):
        return 503, str(exc)
    if isinstance(exc, RemoteError):
        return exc.status, str(exc)
    if isinstance(exc, A3SPowerError):
        return 500, str(exc)
    return 500, "internal server error"


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
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
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        status, message = status_for(exc)
        if status == 500 and not isinstance(exc, A3SPowerError):
            log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, status, message)


async def read_json(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data
