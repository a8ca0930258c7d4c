"""The in-process API (a3s_power.Power, AsyncPower) over real small models: the answers are the api
types, streams cancel when their loop is left, and callers on several threads or tasks share one
scheduler."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pydantic import BaseModel, Field

from a3s_power import AsyncPower, Power
from a3s_power.api import ChatRequest, ChatResponse, Delta, GenerateResponse

GREEDY = {"temperature": 0, "num_predict": 8}
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def power(tmp_path_factory, smollm2_path):
    with Power(models_dir=tmp_path_factory.mktemp("store"), num_parallel=4, context_length=1024) as p:
        p.load(smollm2_path, name="smollm2")
        yield p


def _slots_busy(power: Power) -> int:
    return sum(r.model.engine.stats()["slots_busy"] for r in power.aio.scheduler.running())


def test_a_model_loaded_by_path_is_listed_and_running(power):
    info = next(m for m in power.list() if m.name == "smollm2")
    assert info.details["family"] == "llama" and "completion" in info.capabilities and info.size > 0
    assert power.running() == ["smollm2"]


def test_answers_are_the_api_types(power):
    whole = power.chat(model="smollm2", messages=HELLO, options=GREEDY)
    assert isinstance(whole, ChatResponse) and whole.message.role == "assistant" and whole.message.content
    assert whole.done_reason in ("stop", "length") and 0 < whole.metrics.eval_count <= 8
    parts = list(power.stream_chat(ChatRequest(model="smollm2", messages=HELLO, options=GREEDY)))
    assert all(isinstance(d, Delta) for d in parts) and parts[-1].done and not any(d.done for d in parts[:-1])
    generated = power.generate(model="smollm2", prompt="Once upon a time", options=GREEDY)
    assert isinstance(generated, GenerateResponse) and generated.response and generated.context


def test_logprobs_as_the_server_gives_them(power):
    answer = power.generate(model="smollm2", prompt="The sky is", logprobs=True, top_logprobs=2, options=GREEDY)
    assert len(answer.logprobs) == answer.metrics.eval_count
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in answer.logprobs)
    # greedy: the chosen token is the most likely one
    assert all(lp.token == lp.top_logprobs[0].token for lp in answer.logprobs)


def test_structured_output_into_a_pydantic_model(power):
    class Colour(BaseModel):
        name: str = Field(max_length=12)
        warm: bool

    answer = power.chat(model="smollm2", format=Colour, options={"temperature": 0, "num_predict": 60},
                        messages=[{"role": "user", "content": "Name a colour as JSON."}])
    assert answer.done_reason == "stop"
    Colour.model_validate_json(answer.message.content)  # the grammar allows nothing else


def test_leaving_the_loop_cancels_the_request(power):
    request = ChatRequest(model="smollm2", messages=[{"role": "user", "content": "Tell a long story."}],
                          options={"num_predict": 2000})
    for n, _ in enumerate(power.stream_chat(request)):
        if n == 2:
            break
    deadline = time.monotonic() + 10
    while _slots_busy(power) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _slots_busy(power) == 0


def test_threads_share_one_scheduler(power):
    answers: list[ChatResponse] = []
    peak = [0]

    def ask(i: int) -> None:
        answers.append(power.chat(model="smollm2", options={"temperature": 0, "num_predict": 24},
                                  messages=[{"role": "user", "content": f"Count to {i + 3}."}]))

    def watch() -> None:
        while len(answers) < 4:
            peak[0] = max(peak[0], _slots_busy(power))
            time.sleep(0.005)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 4 and all(a.done_reason for a in answers)
    assert [r.name for r in power.aio.scheduler.running()] == ["smollm2"]  # one model, one set of slots
    assert peak[0] > 1  # decoded side by side in the same batch


def test_async_tasks_stream_side_by_side(tmp_path, smollm2_path):
    async def main() -> list[list[Delta]]:
        async with AsyncPower(models_dir=tmp_path, num_parallel=2, context_length=512) as power:
            await power.load(smollm2_path, name="s")

            async def one(prompt: str) -> list[Delta]:
                return [d async for d in power.stream_generate(model="s", prompt=prompt, options=GREEDY)]

            return await asyncio.gather(one("One"), one("Two"))

    for deltas in asyncio.run(main()):
        assert deltas[-1].done and deltas[-1].metrics.eval_count > 0


def test_rerank_in_process(tmp_path):
    from tests.test_rerank_core import DOCUMENTS, QUERY, RERANK_TEMPLATE
    from tests.tiny_models import write_tiny_llama

    path = write_tiny_llama(tmp_path / "reranker.gguf", architecture="qwen3", rerank_template=RERANK_TEMPLATE, seed=3)
    with Power(models_dir=tmp_path / "store", num_parallel=2, context_length=512) as p:
        info = p.load(path)
        assert info.capabilities == ["rerank"]
        result = p.rerank(model="reranker", query=QUERY, documents=DOCUMENTS, top_n=2, return_documents=True)
        assert len(result.results) == 2
        assert result.results[0].relevance_score >= result.results[1].relevance_score
        assert all(r.document == DOCUMENTS[r.index] for r in result.results)
