"""Prometheus metrics for /metrics, kept in a registry of the app's own (so several servers in
one process, as in tests, never share counters)."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..gpu import gpu_stats
from .slots import engine_slots

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("power_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=r)
        self.request_seconds = Histogram("power_http_request_duration_seconds", "HTTP request duration",
                                         ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("power_inference_tokens_total", "Tokens processed", ["model", "type"], registry=r)
        self.inference_seconds = Summary("power_inference_duration_seconds", "Inference duration", ["model"],
                                         registry=r)
        self.ttft_seconds = Summary("power_ttft_seconds", "Time to first token", ["model"], registry=r)
        self.cost = Counter("power_cost_dollars", "Cost of inference by the configured prices", ["model"],
                            registry=r)
        self.loads = Counter("power_model_loads_total", "Model loads", ["model"], registry=r)
        self.load_seconds = Summary("power_model_load_duration_seconds", "Model load time", ["model"], registry=r)
        self.evictions = Counter("power_model_evictions_total", "Models unloaded to make room", registry=r)

    def attach_scheduler(self, scheduler) -> None:
        """Gauges read from the scheduler when scraped: queue, slots and memory per model."""
        class _Live:
            def collect(self):
                queue = GaugeMetricFamily("power_queue_depth", "Requests waiting for a slot")
                busy = GaugeMetricFamily("power_slots_busy", "Slots generating", labels=["model"])
                slots = GaugeMetricFamily("power_slots", "Slots per loaded model", labels=["model"])
                memory = GaugeMetricFamily("power_model_memory_bytes", "Weights of loaded models", labels=["model"])
                loaded = GaugeMetricFamily("power_models_loaded", "Loaded models")
                cached = GaugeMetricFamily("power_prompt_cache_bytes",
                                           "Host memory holding conversations pushed out of their slots",
                                           labels=["model"])
                on_disk = GaugeMetricFamily("power_prompt_cache_disk_bytes",
                                            "Disk holding conversations that left the prompt cache's memory",
                                            labels=["model"])
                # Where each loaded model's engine thread spent its time (see EngineStats): on a
                # GPU, the sample and other phases are what a step costs beyond the model.
                engine_time = CounterMetricFamily("power_engine_seconds", "Engine thread time by phase",
                                                  labels=["model", "phase"])
                engine_steps = CounterMetricFamily("power_engine_steps", "Batched decode steps", labels=["model"])
                # saved: copied to host memory when pushed out of a slot; restored: copied back
                # (from_disk: of those, read from its disk tier); skipped: let go without a copy,
                # while few kept conversations came back.
                cache_events = CounterMetricFamily("power_prompt_cache_conversations",
                                                   "Conversations the prompt cache saved, restored or skipped",
                                                   labels=["model", "event"])
                free = GaugeMetricFamily("power_slots_free", "Slots free for a request", labels=["model"])
                queued = GaugeMetricFamily("power_model_queue_depth", "Requests waiting for one of the model's slots",
                                           labels=["model"])
                # Where the core reports slots one by one (Engine.slots): the KV cells each holds.
                slot_cached = GaugeMetricFamily("power_slot_cached_tokens",
                                                "Tokens a slot holds in its KV cache, for the next turn to reuse",
                                                labels=["model", "kind", "slot"])
                waiting = 0
                runners = scheduler.running()
                # Per model: its generation and embedding runners summed, their shared weights once.
                per_model: dict[str, list[int]] = {}
                phases: dict[tuple[str, str], int] = {}
                steps: dict[str, int] = {}
                events: dict[tuple[str, str], int] = {}
                per_queue: dict[str, int] = {}
                for runner in runners:
                    stats = runner.model.engine.stats()
                    waiting += stats["queued"]
                    per_queue[runner.name] = per_queue.get(runner.name, 0) + stats["queued"]
                    kind = "embedding" if runner.load_options.embedding else "generation"
                    for view in engine_slots(runner.model.engine) or ():
                        slot_cached.add_metric([runner.name, kind, str(view["id"])], view["cached_tokens"])
                    row = per_model.setdefault(runner.name, [0, 0, 0, 0, 0])
                    row[0] += stats["slots_busy"]
                    row[1] += stats["slots"]
                    row[2] = max(row[2], runner.model.model.size)
                    row[3] += stats["prompt_cache_bytes"]
                    row[4] += stats.get("prompt_cache_disk_bytes", 0)
                    steps[runner.name] = steps.get(runner.name, 0) + stats["steps"]
                    for phase in ("decode", "sample", "other"):
                        phases[(runner.name, phase)] = phases.get((runner.name, phase), 0) + stats[f"{phase}_ns"]
                    for event in ("saved", "restored", "skipped", "from_disk"):
                        key = (runner.name, event)
                        events[key] = events.get(key, 0) + stats[f"prompt_cache_{event}"]
                for name, (n_busy, n_slots, size, cache_bytes, disk_bytes) in per_model.items():
                    busy.add_metric([name], n_busy)
                    slots.add_metric([name], n_slots)
                    free.add_metric([name], max(n_slots - n_busy, 0))
                    queued.add_metric([name], per_queue.get(name, 0))
                    memory.add_metric([name], size)
                    cached.add_metric([name], cache_bytes)
                    on_disk.add_metric([name], disk_bytes)
                for labels, ns in phases.items():
                    engine_time.add_metric(list(labels), ns / 1e9)
                for name, n in steps.items():
                    engine_steps.add_metric([name], n)
                for labels, n in events.items():
                    cache_events.add_metric(list(labels), n)
                queue.add_metric([], waiting)
                loaded.add_metric([], len(per_model))
                yield from (queue, busy, slots, free, queued, slot_cached, memory, loaded, cached, on_disk, engine_time,
                            engine_steps, cache_events)
                gpus = gpu_stats()
                if gpus:
                    mem = GaugeMetricFamily("power_gpu_memory_bytes", "GPU memory in use", labels=["device"])
                    util = GaugeMetricFamily("power_gpu_utilization", "GPU utilization (0-1)", labels=["device"])
                    for g in gpus:
                        mem.add_metric([g.name], g.memory_used)
                        util.add_metric([g.name], g.utilization)
                    yield from (mem, util)

        self.registry.register(_Live())

    # --- hooks -----------------------------------------------------------------------------

    def on_generation(self, model: str, input_tokens: int, output_tokens: int, ttft_ns: int, total_ns: int,
                      cost: float) -> None:
        self.tokens.labels(model, "input").inc(input_tokens)
        self.tokens.labels(model, "output").inc(output_tokens)
        self.inference_seconds.labels(model).observe(total_ns / 1e9)
        if ttft_ns:
            self.ttft_seconds.labels(model).observe(ttft_ns / 1e9)
        if cost:
            self.cost.labels(model).inc(cost)

    def on_load(self, model: str, seconds: float) -> None:
        self.loads.labels(model).inc()
        self.load_seconds.labels(model).observe(seconds)

    def on_eviction(self) -> None:
        self.evictions.inc()

    def middleware(self):
        @web.middleware
        async def count(request: web.Request, handler):
            started = time.perf_counter()
            route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.requests.labels(request.method, route, str(status)).inc()
                self.request_seconds.labels(request.method, route).observe(time.perf_counter() - started)

        return count

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
