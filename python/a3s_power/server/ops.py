"""Operations: /metrics, /v1/usage, and the observer that feeds them (and the request log)."""

from __future__ import annotations

import logging
from datetime import date

from aiohttp import web

from ..usage import UsageLog
from .errors import ApiError
from .metrics import Metrics
from .state import STATE, ServerState

log = logging.getLogger("a3s_power.requests")


class Observer:
    """Hears of finished requests and model loads; counts them, prices them, logs them."""

    def __init__(self, state: ServerState, metrics: Metrics, usage: UsageLog | None) -> None:
        self.state = state
        self.metrics = metrics
        self.usage = usage

    def on_request(self, model: str, kind: str, input_tokens: int, output_tokens: int, ttft_ns: int,
                   total_ns: int) -> None:
        price_in, price_out = self.state.config.price(model)
        cost = (input_tokens * price_in + output_tokens * price_out) / 1e6
        self.metrics.on_generation(model, input_tokens, output_tokens, ttft_ns, total_ns, cost)
        if self.usage is not None:
            self.usage.record(model, kind, input_tokens, output_tokens, total_ns, cost, ttft_ns=ttft_ns)
        log.info("%s model=%s input_tokens=%d output_tokens=%d ttft_ms=%.1f total_ms=%.1f", kind, model,
                 input_tokens, output_tokens, ttft_ns / 1e6, total_ns / 1e6)

    def on_load(self, model: str, seconds: float) -> None:
        self.metrics.on_load(model, seconds)

    def on_eviction(self, model: str) -> None:
        self.metrics.on_eviction()


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a date (YYYY-MM-DD), got {value!r}", param=name) from None


async def usage(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.usage is None:
        raise ApiError(404, "usage tracking is not enabled")
    start = _date(request.query.get("start_date"), "start_date")
    end = _date(request.query.get("end_date"), "end_date")
    if start and end and end < start:
        raise ApiError(400, "end_date is before start_date", param="end_date")
    return web.json_response(state.usage.summary(start, end, request.query.get("model") or None))


async def metrics(request: web.Request) -> web.Response:
    return await request.app[STATE].metrics.handler(request)


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/usage", usage)
