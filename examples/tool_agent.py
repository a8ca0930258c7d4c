"""A tool-calling agent: the model asks for tools, the program runs them and hands back their results
until the model answers in words.

    python examples/tool_agent.py "What is 1234 times 5678, plus 42?"
    python examples/tool_agent.py --model path/to/qwen2.5-coder-0.5b.gguf "..."

Tools are plain Python functions: their names, docstrings and annotated parameters become the JSON
Schema the model sees (``a3s_power.api.Tool.from_function``). The first turn forces a call
(``tool_choice="required"``: a grammar over the tools' schemas), so that even a small model uses them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from a3s_power import Power
from a3s_power.api import Message


def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


TOOLS: dict[str, Callable[..., float]] = {"multiply": multiply, "add": add}


def ensure(power: Power, model: str) -> None:
    if not model.endswith(".gguf") and model not in {m.name for m in power.list()}:
        power.pull(model)


def run_agent(power: Power, model: str, question: str, max_steps: int = 4) -> str:
    messages = [Message(role="user", content=question)]
    for step in range(max_steps):
        answer = power.chat(model=model, messages=messages, tools=list(TOOLS.values()),
                            tool_choice="required" if step == 0 else "auto",
                            options={"temperature": 0, "num_predict": 128})
        messages.append(answer.message)
        if not answer.message.tool_calls:
            return answer.message.content
        for call in answer.message.tool_calls:
            try:
                result = TOOLS[call.name](**call.arguments)
            except Exception as exc:  # noqa: BLE001 - a wrong call is told to the model, which may try again
                result = f"error: {exc}"
            print(f"tool: {call.name}({json.dumps(call.arguments)}) = {result}", flush=True)
            messages.append(Message(role="tool", tool_name=call.name, tool_call_id=call.id, content=str(result)))
    return messages[-1].content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What is 1234 times 5678, plus 42?")
    parser.add_argument("--model", default="qwen2.5-coder:0.5b", help="a model that can call tools, or its .gguf")
    args = parser.parse_args()
    with Power() as power:
        ensure(power, args.model)
        print("answer:", run_agent(power, args.model, args.question))


if __name__ == "__main__":
    main()
