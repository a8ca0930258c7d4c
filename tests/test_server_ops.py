"""Operations: /metrics scraped with prometheus-client's parser, /v1/usage, /health, config.toml."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from a3s_power.config import Config
from a3s_power.errors import InvalidOptionError
from a3s_power.usage import UsageLog
from tests.answers import KEEP_GOING
from tests.server_harness import RunningServer, resolver, server_config


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    resolve = resolver(smollm2=smollm2_path)
    usage = UsageLog(tmp_path_factory.mktemp("usage") / "usage.db")
    config = server_config(num_parallel=2, context_length=1024,
                           pricing={"default": {"input": 1.0, "output": 2.0}})
    srv = RunningServer(config, resolve, usage=usage).start()
    yield srv
    srv.stop()


def scrape(server) -> dict[tuple, float]:
    samples = {}
    for family in text_string_to_metric_families(requests.get(server.url + "/metrics").text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_and_tokens(server):
    before = scrape(server)
    body = {"model": "smollm2", "prompt": "Hello", "stream": False, "options": {"temperature": 0, "num_predict": 5}}
    results = [requests.post(server.url + "/api/generate", json=body).json() for _ in range(2)]
    requests.post(server.url + "/api/generate", json={"model": "missing", "prompt": "x"})
    after = scrape(server)
    route = dict(method="POST", route="/api/generate")
    assert value(after, "power_http_requests_total", status="200", **route) - \
        value(before, "power_http_requests_total", status="200", **route) == 2
    assert value(after, "power_http_requests_total", status="404", **route) - \
        value(before, "power_http_requests_total", status="404", **route) == 1
    out = sum(r["eval_count"] for r in results)
    inp = sum(r["prompt_eval_count"] for r in results)
    model = "smollm2:latest"
    assert value(after, "power_inference_tokens_total", model=model, type="output") - \
        value(before, "power_inference_tokens_total", model=model, type="output") == out
    assert value(after, "power_inference_tokens_total", model=model, type="input") - \
        value(before, "power_inference_tokens_total", model=model, type="input") == inp
    assert value(after, "power_ttft_seconds_count", model=model) - value(before, "power_ttft_seconds_count",
                                                                          model=model) == 2
    expected_cost = (inp * 1.0 + out * 2.0) / 1e6
    assert value(after, "power_cost_dollars_total", model=model) - \
        value(before, "power_cost_dollars_total", model=model) == pytest.approx(expected_cost)
    assert value(after, "power_models_loaded") == 1
    assert value(after, "power_slots", model=model) == 2
    assert ("power_prompt_cache_bytes", (("model", model),)) in after
    for event in ("saved", "restored", "skipped"):
        assert ("power_prompt_cache_conversations_total", (("event", event), ("model", model))) in after
    assert value(after, "power_model_loads_total", model=model) >= 1
    # The engine's thread time by phase grew with the work: decoding and picking tokens.
    for phase in ("decode", "sample"):
        assert value(after, "power_engine_seconds_total", model=model, phase=phase) > \
            value(before, "power_engine_seconds_total", model=model, phase=phase)
    assert value(after, "power_engine_steps_total", model=model) >= value(before, "power_engine_steps_total",
                                                                          model=model) + out


def test_usage_is_recorded_and_filtered(server):
    body = {"model": "smollm2", "prompt": "Hi", "stream": False, "format": KEEP_GOING,
            "options": {"temperature": 0, "num_predict": 3}}
    requests.post(server.url + "/api/generate", json=body)
    usage = requests.get(server.url + "/v1/usage").json()
    assert usage["totals"]["requests"] >= 1 and usage["totals"]["output_tokens"] >= 3
    assert usage["data"][0]["model"] == "smollm2:latest" and usage["totals"]["cost"] > 0
    none = requests.get(server.url + "/v1/usage", params={"model": "other"}).json()
    assert none["totals"]["requests"] == 0
    past = requests.get(server.url + "/v1/usage", params={"start_date": "2001-01-01", "end_date": "2001-01-02"}).json()
    assert past["data"] == []
    bad = requests.get(server.url + "/v1/usage", params={"start_date": "yesterday"})
    assert bad.status_code == 400


def test_usage_survives_a_restart(tmp_path):
    log = UsageLog(tmp_path / "u.db")
    log.record("m", "chat", 10, 5, 1_000_000, 0.5)
    log.close()
    again = UsageLog(tmp_path / "u.db")
    assert again.summary()["totals"] == {"requests": 1, "input_tokens": 10, "output_tokens": 5, "cost": 0.5,
                                         "total_tokens": 15}


def test_usage_keeps_time_to_first_token_and_speed(tmp_path):
    import sqlite3

    # A log written before ttft_ns was kept gains the column; its old rows have no TTFT.
    old = sqlite3.connect(str(tmp_path / "u.db"))
    old.execute("CREATE TABLE usage (ts REAL NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL, "
                "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, duration_ns INTEGER NOT NULL, "
                "cost REAL NOT NULL)")
    old.execute("INSERT INTO usage VALUES (86400 * 3, 'm', 'chat', 4, 3, 9000000, 0)")
    old.commit()
    old.close()
    log = UsageLog(tmp_path / "u.db")
    # Two requests on day 5: 11 tokens after the first in 0.5 s, 21 in 1.5 s, TTFT 100 and 300 ms.
    log.record("m", "chat", 10, 12, 600_000_000, 0.0, ts=86400 * 5, ttft_ns=100_000_000)
    log.record("m", "chat", 10, 22, 1_800_000_000, 0.0, ts=86400 * 5 + 60, ttft_ns=300_000_000)
    old_row, new_row = log.summary()["data"]
    assert (old_row["date"], old_row["ttft_ms"], old_row["tokens_per_second"]) == ("1970-01-04", None, None)
    assert new_row["date"] == "1970-01-06" and new_row["requests"] == 2
    assert new_row["ttft_ms"] == 200.0
    assert new_row["tokens_per_second"] == 16.0  # (11 + 21) tokens / (0.5 + 1.5) s


def test_health(server):
    h = requests.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["version"] and h["uptime_seconds"] >= 0
    assert isinstance(h["loaded_models"], list)


def test_config_toml_and_environment(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text('host = "0.0.0.0"\nport = 8080\nkeep_alive = "10m"\n'
                                          'max_loaded_models = 2\n[gpu]\ngpu_layers = 0\nmain_gpu = 1\n')
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_KEEP_ALIVE", raising=False)
    monkeypatch.delenv("OLLAMA_MAX_LOADED_MODELS", raising=False)
    c = Config.from_env()
    assert (c.host, c.keep_alive, c.max_loaded_models, c.num_gpu, c.main_gpu) == ("0.0.0.0:8080", 600.0, 2, 0, 1)
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "-1")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9999")
    c = Config.from_env()
    assert c.keep_alive < 0 and c.host == "127.0.0.1:9999"


def test_inference_nice_from_toml_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.delenv("A3S_POWER_INFERENCE_NICE", raising=False)
    assert Config.from_env().inference_nice == 10
    (tmp_path / "config.toml").write_text("inference_nice = 3\n")
    assert Config.from_env().inference_nice == 3
    monkeypatch.setenv("A3S_POWER_INFERENCE_NICE", "0")
    assert Config.from_env().inference_nice == 0
    (tmp_path / "config.toml").write_text("inference_nice = 40\n")
    with pytest.raises(InvalidOptionError, match="inference_nice"):
        Config.from_env()


def test_bad_config_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text('max_loaded_modles = 2\n')
    with pytest.raises(InvalidOptionError, match="max_loaded_modles"):
        Config.from_env()
    (tmp_path / "config.toml").write_text('[gpu]\ngpu_layers = "many"\n')
    with pytest.raises(InvalidOptionError, match="gpu.gpu_layers"):
        Config.from_env()
    (tmp_path / "config.toml").write_text('keep_alive = "forever"\n')
    with pytest.raises(InvalidOptionError, match="keep_alive"):
        Config.from_env()
