"""Semantic search: embed documents once, then rank them by cosine similarity to a query.

    python examples/embeddings_search.py "Which animal purrs?"
    python examples/embeddings_search.py --model path/to/nomic-embed-text.gguf "..."

Written with ``AsyncPower``: the documents are embedded by several tasks at once, which the scheduler
batches into the model's slots. nomic-embed-text wants the ``search_document:`` and
``search_query:`` prefixes it was trained with.
"""

from __future__ import annotations

import argparse
import asyncio
import math

from a3s_power import AsyncPower

DOCUMENTS = [
    "Cats are small domestic animals that purr when they are content.",
    "The Eiffel Tower stands in Paris and was finished in 1889.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
    "Jupiter is the largest planet of the solar system.",
]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))) or 1.0)


async def search(power: AsyncPower, model: str, query: str, documents: list[str]) -> list[tuple[float, str]]:
    # One request per document, all at once: the scheduler batches them.
    embedded = await asyncio.gather(*(power.embed(model=model, input=f"search_document: {d}") for d in documents))
    (question,) = (await power.embed(model=model, input=f"search_query: {query}")).embeddings
    scores = [cosine(question, e.embeddings[0]) for e in embedded]
    return sorted(zip(scores, documents), reverse=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", nargs="?", default="Which animal purrs?")
    parser.add_argument("--model", default="nomic-embed-text", help="an embedding model, or its .gguf")
    args = parser.parse_args()
    async with AsyncPower() as power:
        if not args.model.endswith(".gguf") and args.model not in {m.name for m in power.list()}:
            await power.pull(args.model)
        for score, document in await search(power, args.model, args.query, DOCUMENTS):
            print(f"{score:.3f}  {document}")


if __name__ == "__main__":
    asyncio.run(main())
