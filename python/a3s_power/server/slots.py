"""What each loaded model's slots are doing, in the spirit of llama-server's /slots: GET /api/slots
for the detail, and the summary /api/ps and /metrics show per model.

A model loaded for generation and for embeddings has a runner (an engine with its own slots) for
each; /api/slots lists every runner, /api/ps sums them per model. Each slot's cached tokens (the
KV cells it holds, which a conversation's next turn reuses) come from the engine's ``slots()``
where the core has it; without it, the counts per runner come from ``stats()`` and ``slots`` is
null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ..errors import InferenceError
from .state import state_of


def engine_slots(engine: Any) -> list[dict[str, Any]] | None:
    """Each slot as the engine's last step left it (``id``, ``busy``, ``cached_tokens``,
    ``generated``), or None where the engine does not report slots one by one."""
    read = getattr(engine, "slots", None)
    if read is None:
        return None
    try:
        views = read()
    except InferenceError:  # a worker that has just ended holds nothing
        return None
    return None if views is None else [dict(v) for v in views]


def runner_slots(runner: Any) -> dict[str, Any]:
    """One runner's slots: how many, how many busy and free, the requests waiting for one, the
    prompt cache it keeps, and each slot."""
    engine = runner.model.engine
    try:
        stats = engine.stats()
    except InferenceError:  # its worker ended and nothing was read from it before
        stats = {}
    total, busy = stats.get("slots", 0), stats.get("slots_busy", 0)
    return {"name": runner.name, "kind": "embedding" if runner.load_options.embedding else "generation",
            "context_length": runner.load_options.num_ctx, "total": total, "busy": busy,
            "free": max(total - busy, 0), "queued": stats.get("queued", 0),
            "prompt_cache_bytes": stats.get("prompt_cache_bytes", 0),
            "prompt_cache_disk_bytes": stats.get("prompt_cache_disk_bytes", 0),
            "slots": engine_slots(engine)}


def summary(details: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A model's runners summed, as /api/ps shows them: slots busy and free, requests queued,
    and each slot's cached tokens (generation's slots first) where the engine reports them."""
    out: dict[str, Any] = {"total": 0, "busy": 0, "free": 0, "queued": 0}
    cached: list[int] | None = []
    for d in sorted(details, key=lambda d: d["kind"] != "generation"):
        for key in out:
            out[key] += d[key]
        if cached is not None and d["slots"] is not None:
            cached += [s["cached_tokens"] for s in d["slots"]]
        else:
            cached = None
    if cached is not None:
        out["cached_tokens"] = cached
    return out


async def slots(request: web.Request) -> web.Response:
    """GET /api/slots[?model=NAME]: every loaded runner's slots."""
    wanted = request.query.get("model")
    runners = sorted(state_of(request).scheduler.running(), key=lambda r: (r.name, r.load_options.embedding))
    if wanted:
        full = wanted if ":" in wanted.rsplit("/", 1)[-1] else wanted + ":latest"
        runners = [r for r in runners if r.name in (wanted, full)]
    return web.json_response({"models": [runner_slots(r) for r in runners]})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/slots", slots)
