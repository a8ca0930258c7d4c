"""The settings table (config.py, settings.py): each setting read from the environment and from
config.toml as declared, ranges kept, and README's table and ``serve --help`` made from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from a3s_power.cli import main
from a3s_power.config import SETTINGS, Config
from a3s_power.errors import InvalidOptionError
from a3s_power.settings import Setting, markdown, table_in

ROOT = Path(__file__).resolve().parent.parent

# A value unlike the default for each setting whose type alone does not say what to write: the
# text for the environment and what Config then holds, the value for config.toml and what Config
# then holds.
SPECIAL: dict[str, tuple[str, Any, Any, Any]] = {
    "host": ("0.0.0.0:8080", "0.0.0.0:8080", "0.0.0.0", "0.0.0.0:11434"),
    "keep_alive": ("10m", 600.0, "-1", -1.0),
    "load_timeout": ("2m", 120.0, None, None),
    "debug": ("2", 2, None, None),
    "kv_cache_type": ("Q8_0", "q8_0", "q4_0", "q4_0"),
    "cloud_url": ("https://example.com/", "https://example.com", None, None),
    "pricing": ("", None, {"default": {"input": 1.5}}, {"default": {"input": 1.5, "output": 0.0}}),
}


def _sample(s: Setting, tmp_path: Path) -> tuple[str, Any, Any, Any]:
    if s.name in SPECIAL:
        return SPECIAL[s.name]
    base = s.type if s.type in (bool, int, float, str, Path) else None
    if s.type == bool | None or base is bool:
        return ("1", True, True, True) if not s.default else ("0", False, False, False)
    if base is int or base is float:
        value = (s.default or 0) + 3
        if s.le is not None:
            value = min(value, s.le - 1)
        return str(value), value, value, value
    if s.type == Path | None:
        return str(tmp_path / s.name), tmp_path / s.name, str(tmp_path / s.name), tmp_path / s.name
    if s.type == tuple[str, ...]:
        return "a.example, b.example", ("a.example", "b.example"), ["a.example", "b.example"], \
            ("a.example", "b.example")
    if base is str:
        return "other", "other", "other", "other"
    raise AssertionError(f"no sample for {s.name}: {s.type}; add one to SPECIAL")


def _toml(key: str, value: Any) -> str:
    def literal(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(literal(x) for x in v) + "]"
        return repr(v)

    table, _, name = key.rpartition(".")
    if isinstance(value, dict):  # a table of tables: [pricing.default]
        return "".join(f"[{name}.{k}]\n" + "".join(f"{kk} = {literal(vv)}\n" for kk, vv in v.items())
                       for k, v in value.items())
    return (f"[{table}]\n" if table else "") + f"{name} = {literal(value)}\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh $A3S_POWER_HOME and no setting in the environment."""
    for s in SETTINGS:
        if s.env:
            monkeypatch.delenv(s.env, raising=False)
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


FIELDS = [s for s in SETTINGS if s.name]


@pytest.mark.parametrize("s", [s for s in FIELDS if s.env and s.name != "home"], ids=lambda s: s.env)
def test_each_variable_sets_its_field(s, home, monkeypatch, tmp_path):
    text, expected, _, _ = _sample(s, tmp_path)
    assert getattr(Config.from_env(), s.name) == s.default
    monkeypatch.setenv(s.env, text)
    assert getattr(Config.from_env(), s.name) == expected


@pytest.mark.parametrize("s", [s for s in FIELDS if s.toml_key], ids=lambda s: s.toml_key)
def test_each_config_toml_key_sets_its_field(s, home, tmp_path):
    _, _, value, expected = _sample(s, tmp_path)
    (home / "config.toml").write_text(_toml(s.toml_key, value))
    assert getattr(Config.from_env(), s.name) == expected


def test_the_environment_wins_over_config_toml(home, monkeypatch, tmp_path):
    (home / "config.toml").write_text('host = "h"\nport = 1\nkeep_alive = "5m"\nnum_parallel = 2\n')
    monkeypatch.setenv("OLLAMA_HOST", "e:2")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "-1")
    c = Config.from_env()
    assert (c.host, c.keep_alive, c.num_parallel) == ("e:2", -1.0, 2)


def test_the_keys_that_make_up_other_settings(home, tmp_path):
    (home / "config.toml").write_text("port = 8080\n")
    assert Config.from_env().host == "127.0.0.1:8080"
    (home / "config.toml").write_text(f'data_dir = "{tmp_path / "d"}"\n')
    assert Config.from_env().models_root == tmp_path / "d" / "models"
    (home / "config.toml").write_text(f'data_dir = "{tmp_path / "d"}"\nmodels_dir = "{tmp_path / "m"}"\n')
    assert Config.from_env().models_root == tmp_path / "m"


def _outside(s: Setting) -> list[float]:
    """Values just outside a setting's range."""
    values = []
    if s.ge is not None:
        values.append(s.ge - 1)
    if s.gt is not None:
        values.append(s.gt)
    if s.le is not None:
        values.append(s.le + 1)
    return values


RANGED = [s for s in FIELDS if _outside(s)]


def test_some_settings_have_ranges():
    assert {"num_parallel", "inference_nice", "max_body_mb", "header_timeout_s"} <= {s.name for s in RANGED}


@pytest.mark.parametrize("s", [s for s in RANGED if s.toml_key], ids=lambda s: s.toml_key)
def test_config_toml_names_a_value_out_of_range(s, home):
    for value in _outside(s):
        (home / "config.toml").write_text(_toml(s.toml_key, value))
        with pytest.raises(InvalidOptionError, match=re.escape(s.toml_key)):
            Config.from_env()


@pytest.mark.parametrize("s", [s for s in RANGED if s.env], ids=lambda s: s.env)
def test_a_variable_out_of_range_is_ignored(s, home, monkeypatch):
    # As Ollama ignores a nonsense value; A3S_POWER_HEADER_TIMEOUT has always refused one.
    for value in _outside(s) + ([s.env_ge - 1] if s.env_ge is not None else []):
        monkeypatch.setenv(s.env, str(value))
        if s.name == "header_timeout_s":
            with pytest.raises(InvalidOptionError, match=s.env):
                Config.from_env()
        else:
            assert getattr(Config.from_env(), s.name) == s.default


def test_a_malformed_variable_names_itself(home, monkeypatch):
    for name in ("OLLAMA_NUM_PARALLEL", "A3S_POWER_HEADER_TIMEOUT", "OLLAMA_KEEP_ALIVE", "OLLAMA_LOAD_TIMEOUT"):
        monkeypatch.setenv(name, "soon")
        with pytest.raises(InvalidOptionError, match=name):
            Config.from_env()
        monkeypatch.delenv(name)


def test_keep_alive_reads_the_same_from_both():
    # README's example: "0" unloads at once, "-1" never; numbers are seconds.
    for text, seconds in (("0", 0.0), ("-1", -1.0), ("30", 30.0), ("1.5", 1.5), ("5m", 300.0), ("-1m", -1.0)):
        s = next(s for s in SETTINGS if s.name == "keep_alive")
        assert s.clean(text) == seconds


def test_every_field_is_a_setting_and_names_are_unique():
    assert {s.name for s in FIELDS} == set(Config.model_fields)
    envs = [s.env for s in SETTINGS if s.env]
    keys = [s.toml_key for s in SETTINGS if s.toml_key]
    assert len(envs) == len(set(envs)) and len(keys) == len(set(keys))
    assert all(re.fullmatch(r"(OLLAMA|A3S_POWER)_[A-Z_]+", e) for e in envs)
    assert all(s.help and not s.help.endswith(".") for s in SETTINGS)


def test_every_variable_the_code_reads_is_declared():
    declared = {s.env for s in SETTINGS if s.env}
    named = set()
    for path in [*(ROOT / "python" / "a3s_power").rglob("*.py"), *(ROOT / "cpp").glob("*.cpp")]:
        named |= set(re.findall(r'"((?:OLLAMA|A3S_POWER)_[A-Z0-9_]+)"', path.read_text(encoding="utf-8")))
    assert named <= declared, named - declared


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table_in(readme) == markdown(SETTINGS), \
        "README's settings table is stale: python -m a3s_power.config --update README.md"


def test_serve_help_lists_every_setting():
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    env_part, _, toml_part = result.output.partition("config.toml keys")
    for s in SETTINGS:
        if s.env:
            assert re.search(rf"^\s+{s.env}\s", env_part, re.M), s.env
        if s.toml_key:
            assert re.search(rf"^\s+{re.escape(s.toml_key)}\s", toml_part, re.M), s.toml_key
    assert "slots per loaded model (default 4)" in result.output
