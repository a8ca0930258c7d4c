"""A conversation in the terminal: each line you type is a turn, the answer streams back.

    python examples/chat_loop.py                      # smollm2:135m, pulled on first use
    python examples/chat_loop.py --model path/to/model.gguf

/bye or Ctrl-D ends it. Ctrl-C stops the answer being written (leaving the stream's loop cancels the
request and frees its slot) and the conversation goes on.
"""

from __future__ import annotations

import argparse
import sys

from a3s_power import Power
from a3s_power.api import Message


def ensure(power: Power, model: str) -> None:
    """A GGUF path runs as it is; a name is pulled into the store once."""
    if not model.endswith(".gguf") and model not in {m.name for m in power.list()}:
        power.pull(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2:135m", help="a model name or the path of a .gguf file")
    parser.add_argument("--system", default="You are a helpful assistant. Answer briefly.")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()

    with Power() as power:
        ensure(power, args.model)
        history = [Message(role="system", content=args.system)]
        while True:
            print(">>> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/bye":
                break
            if not line.strip():
                continue
            history.append(Message(role="user", content=line.strip()))
            said = []
            try:
                for delta in power.stream_chat(model=args.model, messages=history,
                                               options={"num_predict": args.max_tokens}):
                    print(delta.content, end="", flush=True)
                    said.append(delta.content)
            except KeyboardInterrupt:
                pass
            print()
            history.append(Message(role="assistant", content="".join(said)))


if __name__ == "__main__":
    main()
