"""Ollama's options: defaults, precedence, typing and validation."""

from __future__ import annotations

import pytest

from a3s_power.config import Config
from a3s_power.engine.options import Options, defaults, parse_options, replace_load
from a3s_power.errors import InvalidOptionError


def test_defaults_follow_ollama():
    o = Options()
    assert (o.temperature, o.top_k, o.top_p, o.min_p, o.typical_p) == (0.8, 40, 0.9, 0.0, 1.0)
    assert (o.repeat_last_n, o.repeat_penalty, o.seed, o.num_predict) == (64, 1.0, -1, -1)


def test_environment_sets_load_defaults(monkeypatch):
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "8192")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q8_0")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    load = defaults(Config.from_env()).load
    assert (load.num_ctx, load.flash_attention, load.kv_cache_type, load.num_parallel) == (8192, True, "q8_0", 3)


def test_request_options_override_and_are_typed():
    base = parse_options({"temperature": 0.2, "num_ctx": 1024})
    o = parse_options({"temperature": "0.5", "top_k": 3.0, "stop": "END", "num_ctx": 2048, "use_mmap": "false"}, base)
    assert o.temperature == 0.5 and o.top_k == 3 and o.stop == ("END",)
    assert o.load.num_ctx == 2048 and o.load.use_mmap is False
    assert base.load.num_ctx == 1024  # the base is untouched


def test_removed_and_unknown_options_are_ignored():
    o = parse_options({"tfs_z": 0.5, "low_vram": True, "num_keep": 4, "made_up": 1})
    assert o == parse_options({})


@pytest.mark.parametrize(
    "raw, name",
    [
        ({"num_ctx": 0}, "num_ctx"),
        ({"num_thread": -1}, "num_thread"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"mirostat": 4}, "mirostat"),
        ({"top_k": "many"}, "top_k"),
        ({"temperature": "hot"}, "temperature"),
        ({"use_mmap": "perhaps"}, "use_mmap"),
        ({"stop": [1, 2]}, "stop"),
        ({"kv_cache_type": "q3"}, "kv_cache_type"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_impossible_options_name_the_option(raw, name):
    with pytest.raises(InvalidOptionError, match=name):
        parse_options(raw)


def test_load_options_map_onto_the_core():
    o = replace_load(parse_options({"num_ctx": 512, "num_thread": 3, "flash_attention": True, "num_gpu": 0}),
                     num_parallel=2)
    cp = o.load.context_params()
    assert (cp.n_ctx, cp.n_threads, cp.n_threads_batch, cp.n_parallel, cp.flash_attn) == (512, 3, 3, 2, "on")
    assert o.load.model_params().n_gpu_layers == 0
    sp = o.sampling_params(grammar='root ::= "x"', logit_bias={5: -1.0})
    assert sp.grammar == 'root ::= "x"' and sp.logit_bias == [(5, -1.0)]


@pytest.mark.parametrize("env, expected", [(None, "auto"), ("1", "on"), ("false", "off")])
def test_flash_attention_is_llama_cpps_choice_unless_set(monkeypatch, env, expected):
    # Ollama passes --flash-attn auto unless OLLAMA_FLASH_ATTENTION says otherwise.
    monkeypatch.delenv("OLLAMA_FLASH_ATTENTION", raising=False)
    if env is not None:
        monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", env)
    assert defaults(Config.from_env()).load.context_params().flash_attn == expected
    assert parse_options({"flash_attention": False}, defaults(Config.from_env())).load.context_params().flash_attn == "off"
