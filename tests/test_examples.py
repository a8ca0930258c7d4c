"""Every script in examples/ runs, on the real small models the other tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "2048"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], input=stdin, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_chat_loop(smollm2_path):
    out = run("chat_loop.py", "--model", smollm2_path, "--max-tokens", "12", stdin="Hi!\nWhat is 2+2?\n/bye\n")
    turns = out.split(">>> ")
    assert len(turns) == 4 and all(t.strip() for t in turns[1:3])  # two answers, then /bye


def test_tool_agent(qwen_path):
    out = run("tool_agent.py", "--model", qwen_path, "What is 12 times 7?")
    calls = [line for line in out.splitlines() if line.startswith("tool: ")]
    assert calls and all(line.split("(")[0] in ("tool: multiply", "tool: add") for line in calls)
    assert "answer:" in out


def test_extract_into_a_pydantic_model(qwen_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from extract import Person
    finally:
        sys.path.remove(str(EXAMPLES))
    out = run("extract.py", "--model", qwen_path, "Grace Hopper, born 1906 in New York, wrote a compiler.")
    person = Person.model_validate_json(out.strip().splitlines()[-1])
    assert set(json.loads(person.model_dump_json())) == {"name", "birth_year", "city"}


def test_embeddings_search(nomic_path):
    out = run("embeddings_search.py", "--model", nomic_path, "Which animal purrs?")
    rows = [line.split("  ", 1) for line in out.strip().splitlines()]
    scores = [float(score) for score, _ in rows]
    assert len(rows) == 5 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
