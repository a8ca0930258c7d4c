"""What every route reads: the server's shared state, kept on the aiohttp application.

Its own module, below app.py and every route module, so that routes reach the state without
importing the application that imports them."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Config
from ..engine.scheduler import Scheduler

if TYPE_CHECKING:
    from ..engine.service import InferenceService


@dataclass
class ServerState:
    config: Config
    scheduler: Scheduler
    store: Any = None  # the ModelStore, when the server manages one
    service: InferenceService | None = None  # the InferenceService over the scheduler, made by create_app
    responses: Any = None  # stored OpenAI Responses, for previous_response_id
    metrics: Any = None  # server.metrics.Metrics, made by create_app
    usage: Any = None  # usage.UsageLog; None disables /v1/usage
    started_at: float = field(default_factory=time.time)
    # Whether the listener is on a loopback address: then only local Host headers are served.
    loopback_only: bool = True


STATE = web.AppKey("state", ServerState)


def is_loopback(host: str) -> bool:
    """Whether an address (the listener's, a client's) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]


def service_of(request: web.Request) -> InferenceService:
    service = state_of(request).service
    assert service is not None, "create_app makes the service"
    return service
