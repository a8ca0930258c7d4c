"""What a test may rely on in a tiny model's answers, on any machine.

llama.cpp is built for the CPU it runs on, so the greedy text of a 135M model differs between CPU
generations and attention paths ("Paris" on one machine, "Le Grand Château" on another). Tests
therefore never assert what a model says unless a grammar forces it. They check what the server
controls, with the helpers below:

- ``stop_word``: a stop string taken from the model's own earlier answer on this machine;
- ``KEEP_GOING``: a ``format`` schema that forbids the end of generation for thousands of tokens, for
  tests that need a model to run into ``num_predict`` or the context;
- ``CITY``: a schema whose output is forced exactly, for tests that need a known phrase.
"""

from __future__ import annotations

import json
import re

# A JSON string of at least 2,000 characters (llama.cpp's grammars allow no larger repetition): the
# grammar allows no end of generation before it, so a test that asks for up to a hundred or two tokens
# always ends by length.
KEEP_GOING = {"type": "string", "minLength": 2000}

# The one answer this schema allows is FORCED_CITY, whatever the model would have said.
CITY = {"type": "object", "properties": {"city": {"const": "Paris"}}, "required": ["city"]}
FORCED_CITY = {"city": "Paris"}


def stop_word(text: str) -> str:
    """An early word of the answer (not at its very start), to use as a stop string: the answer
    cut there is ``before(text, word)``. Early, because that is where two runs agree longest."""
    for match in re.finditer(r"\w{2,}", text):
        if match.start() > 0:
            return match.group()
    assert len(text) >= 3, f"the answer {text!r} is too short to take a stop string from"
    return text[1:3]


def before(text: str, stop: str) -> str:
    """The answer as a stop string cuts it."""
    return text[: text.index(stop)]


def forced_city(text: str) -> bool:
    return json.loads(text) == FORCED_CITY


# Two greedy runs of one model over the same tokens agree bit for bit only when llama.cpp computes
# them in the same batch shapes. A prompt whose first part comes from a cache (another slot's cells,
# host memory, the slot's own earlier turn) has only its rest evaluated, in a smaller micro-batch, and
# in one KV buffer shared by all slots a busy slot's token joins that micro-batch; CPU kernels (flash
# attention's tiled path, the repacked matrix kernels) pick their path by those shapes, and 30 layers
# amplify the difference. Measured on SmolLM2-135M Q4_1 (AVX2, 2026-12-03; /tmp-style probe kept in
# the closing note of issue 13): the first chosen token's logprob moved by 0.11 with a copied system
# prompt in one buffer, by 0.27 with no copy at all but a busy neighbour in the same micro-batch, by
# 0.08 with flash attention; with a buffer per slot and flash attention off, not at all. A wrong copy
# (wrong cells or positions) changes the context the model sees, which moves logprobs by far more and
# changes what comes next. So what is asserted: the chosen tokens' logprobs agree within
# LOGPROB_TOLERANCE, and the runs part only at a step where the reference's top two are within
# NEAR_TIE of each other.
LOGPROB_TOLERANCE = 0.4
NEAR_TIE = 0.5


def assert_same_greedy(got, ref) -> int:
    """Checks two greedy runs made with ``logprobs`` and ``top_logprobs >= 2`` (``tests.conftest.Result``)
    as above; returns how many tokens they share."""
    assert len(got.logprobs) == len(got.tokens) and len(ref.logprobs) == len(ref.tokens), "run with logprobs"
    shared = 0
    for a, b in zip(got.logprobs, ref.logprobs):
        if a.token != b.token:
            break
        assert abs(a.logprob - b.logprob) < LOGPROB_TOLERANCE, (
            f"step {shared}: token {a.token} has logprob {a.logprob:.4f} against {b.logprob:.4f}")
        shared += 1
    if shared == len(got.tokens) == len(ref.tokens):
        return shared
    # Parted (or one ended): the reference must have been close to a tie there.
    where = ref.logprobs[shared] if shared < len(ref.tokens) else got.logprobs[shared]
    margin = where.top[0].logprob - where.top[1].logprob
    assert margin < NEAR_TIE, (
        f"the runs part at step {shared} ({got.tokens[shared:shared + 3]} against {ref.tokens[shared:shared + 3]}) "
        f"where the top two tokens are {margin:.3f} apart: not a rounding difference")
    return shared


def unload(url: str, model: str) -> None:
    """Unloads a model from a test server, so that its next request evaluates the prompt cold, in the
    same batch shapes as the first did: two greedy runs compared for equality must both be cold
    (see above why a cached prefix may change the last bits)."""
    import requests

    r = requests.post(url + "/api/generate", json={"model": model, "keep_alive": 0}, timeout=120)
    assert r.status_code == 200 and r.json().get("done_reason") == "unload", r.text
