"""Structured extraction: the answer is JSON that a pydantic model validates, by construction.

    python examples/extract.py "Ada Lovelace, born 1815 in London, wrote the first program."

``format`` takes the pydantic class itself; its JSON Schema becomes a grammar, so the model can only
write JSON of that shape, and ``model_validate_json`` reads it back.
"""

from __future__ import annotations

import argparse

from pydantic import BaseModel, Field

from a3s_power import Power


class Person(BaseModel):
    name: str = Field(max_length=40)
    birth_year: int = Field(ge=0, le=2100)
    city: str = Field(max_length=40)


def ensure(power: Power, model: str) -> None:
    if not model.endswith(".gguf") and model not in {m.name for m in power.list()}:
        power.pull(model)


def extract(power: Power, model: str, text: str) -> Person:
    answer = power.chat(model=model, format=Person, options={"temperature": 0, "num_predict": 200},
                        messages=[{"role": "system", "content": "Extract the person as JSON."},
                                  {"role": "user", "content": text}])
    return Person.model_validate_json(answer.message.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default="Ada Lovelace, born 1815 in London, wrote the first program.")
    parser.add_argument("--model", default="qwen2.5-coder:0.5b", help="a model name or the path of a .gguf file")
    args = parser.parse_args()
    with Power() as power:
        ensure(power, args.model)
        person = extract(power, args.model, args.text)
        print(person.model_dump_json())


if __name__ == "__main__":
    main()
