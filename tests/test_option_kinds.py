"""option_kinds.py names Ollama's options for the store, below the engine; engine/options.py declares
them as dataclass fields with the core's defaults. The two must list the same options, typed alike."""

from __future__ import annotations

from a3s_power import option_kinds
from a3s_power.engine import options


def test_the_tables_match_the_engines_fields():
    assert {name: str(f.type) for name, f in options._LOAD_FIELDS.items()} == option_kinds.LOAD_OPTIONS
    assert {name: str(f.type) for name, f in options._REQUEST_FIELDS.items()} == option_kinds.REQUEST_OPTIONS


def test_the_store_no_longer_loads_the_engine():
    import subprocess
    import sys

    code = ("import sys; from a3s_power.store.parameters import format_params; "
            "format_params({'temperature': ['0.5'], 'num_ctx': ['8']}); "
            "print(sorted(m for m in sys.modules if m.startswith('a3s_power.engine') or m == 'a3s_power._core'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
