"""LoadedModel: the asyncio bridge over the engine, as the server and embedders use it."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import threading

import pytest

from a3s_power.engine.options import parse_options, replace_load
from a3s_power.engine.runner import LoadedModel
from a3s_power.errors import InferenceError, ModelLoadError
from a3s_power.prompt.build import chat_prompt

GREEDY = {"temperature": 0, "num_thread": 2}


@pytest.fixture(scope="module")
def loaded(smollm2_path):
    options = replace_load(parse_options(GREEDY), num_parallel=4, num_ctx=1024)
    model = LoadedModel(smollm2_path, options.load)
    yield model
    model.close()


async def complete(model: LoadedModel, text: str, **options) -> tuple[str, list]:
    tokens = model.tokenize_prompt(chat_prompt(model, [{"role": "user", "content": text}]))
    chunks = [c async for c in model.generate(tokens, parse_options({**GREEDY, **options}))]
    return "".join(c.text for c in chunks), chunks


def test_streams_a_chat_answer(loaded):
    text, chunks = asyncio.run(complete(loaded, "Which city is the capital of France?", num_predict=128))
    assert text.strip()
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    assert chunks[-1].timings["eval_count"] == sum(len(c.tokens) for c in chunks)
    assert all(not c.done for c in chunks[:-1])


def test_bos_is_added_once_whether_or_not_the_template_writes_it(tmp_path):
    from tests.tiny_models import CHATML_TEMPLATE, write_tiny_llama

    for template in (CHATML_TEMPLATE, "{{ bos_token }}" + CHATML_TEMPLATE):
        path = write_tiny_llama(tmp_path / "bos.gguf", add_bos=True, chat_template=template)
        with LoadedModel(str(path), parse_options({"num_ctx": 128}).load) as model:
            tokens = model.tokenize_prompt(chat_prompt(model, [{"role": "user", "content": "hi"}]))
            bos = model.model.bos_token
            assert tokens[0] == bos and tokens.count(bos) == 1


def test_concurrent_requests_share_the_engine(loaded):
    async def main():
        return await asyncio.gather(*(complete(loaded, f"Name a color. #{i}", num_predict=10) for i in range(6)))

    results = asyncio.run(main())
    assert len(results) == 6
    for text, chunks in results:
        assert chunks[-1].done and text


async def slots_free(model: LoadedModel) -> bool:
    """Whether every slot of the engine is free within five seconds."""
    for _ in range(100):
        if model.engine.stats()["slots_busy"] == 0:
            return True
        await asyncio.sleep(0.05)
    return False


def test_closing_the_stream_cancels_the_request(loaded):
    async def main():
        tokens = loaded.tokenize("Write a long story about the sea.", True, True)
        stream = loaded.generate(tokens, parse_options({**GREEDY, "num_predict": 100000}))
        async for _ in stream:
            break
        await stream.aclose()
        # Let the engine notice; then every slot must be free again.
        return await slots_free(loaded)

    assert asyncio.run(main())


def test_a_cancelled_task_cancels_its_request(loaded):
    async def main():
        tokens = loaded.tokenize("Write a long story about the sea.", True, True)

        async def consume():
            no_end = {loaded.model.eos_token: -100.0}
            async for _ in loaded.generate(tokens, parse_options({**GREEDY, "num_predict": 100000}), logit_bias=no_end):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await slots_free(loaded)

    assert asyncio.run(main())


def test_stop_options_reach_the_engine(smollm2_path):
    from tests.answers import before, stop_word

    def answer(**options) -> tuple[str, list]:
        # A model of its own for each run: both evaluate the prompt cold, in the same shapes.
        with LoadedModel(smollm2_path, replace_load(parse_options(GREEDY), num_ctx=512).load) as model:
            return asyncio.run(complete(model, "Name the capital city of Germany.", num_predict=48, **options))

    text, _ = answer()
    stop = stop_word(text)
    stopped, chunks = answer(stop=[stop])
    assert stopped == before(text, stop) and chunks[-1].done_reason == "stop"


@pytest.mark.slow
def test_embeddings_through_the_runner(nomic_path):
    options = replace_load(parse_options({"num_thread": 2}), embedding=True, num_ctx=2048, num_parallel=2)
    with LoadedModel(nomic_path, options.load) as model:
        inputs = [model.tokenize(t) for t in ("search_query: hello", "search_document: hello there", "bananas")]
        vectors = asyncio.run(model.embed(inputs))
        assert len(vectors) == 3 and all(len(v) == 768 for v in vectors)
        import numpy as np

        a, b, c = (np.array(v) for v in vectors)
        assert a @ b > a @ c  # related texts are closer than unrelated ones


def test_unloaded_model_refuses_work(tiny_path):
    model = LoadedModel(tiny_path, parse_options({"num_ctx": 128}).load)
    model.close()
    with pytest.raises(InferenceError, match="unloaded"):
        asyncio.run(model.generate([1, 2], parse_options({})).__anext__())


def test_load_failure_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(ModelLoadError, match="bad.gguf"):
        LoadedModel(str(bad), parse_options({}).load)


def test_stream_interval_groups_tokens_but_never_delays_the_first(smollm2_path):
    options = replace_load(parse_options(GREEDY), num_ctx=512, stream_interval_ms=100)
    with LoadedModel(smollm2_path, options.load) as model:
        tokens = model.tokenize("Count from one to fifty:", True, True)

        async def main():
            chunks = [c async for c in model.generate(tokens, parse_options({**GREEDY, "num_predict": 60}),
                                                      logit_bias={model.model.eos_token: -100.0})]
            return chunks

        chunks = asyncio.run(main())
        assert len(chunks[0].tokens) == 1
        assert sum(len(c.tokens) for c in chunks) == 60
        assert len(chunks) < 40  # grouped: far fewer wake-ups than tokens


def _custom_slices_supported() -> bool:
    """Whether this kernel honours a thread's own scheduler slice (EEVDF, Linux 6.12+)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    found = []

    def probe():
        attr = struct.pack("IIQiIQQQ", 48, 0, 0, 0, 0, 5_000_000, 0, 0)
        if libc.syscall(314 if os.uname().machine == "x86_64" else 274, 0, attr, 0) == 0:
            found.append(_slice_of(threading.get_native_id()) == 5_000_000)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return found == [True]


def _slice_of(tid: int) -> int | None:
    for line in open(f"/proc/self/task/{tid}/sched"):
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_inference_threads_run_at_a_lower_priority_than_the_server(smollm2_path):
    options = replace_load(parse_options(GREEDY), num_ctx=512, num_thread=2, inference_nice=5)

    def nice_of_threads() -> dict[int, int]:
        return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}

    before = nice_of_threads()
    with LoadedModel(smollm2_path, options.load) as model:
        tokens = model.tokenize("Count from one to ten:", True, True)

        async def main():
            return [c async for c in model.generate(tokens, parse_options({**GREEDY, "num_predict": 8}))]

        asyncio.run(main())
        started = {tid: nice for tid, nice in nice_of_threads().items() if tid not in before}
        slices = {_slice_of(tid) for tid in started}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before[threading.get_native_id()]
    # The inference thread and the compute threads it started, 5 below the process (which may run niced).
    assert started and set(started.values()) == {min(before[threading.get_native_id()] + 5, 19)}
    if _custom_slices_supported():  # ... which also take long slices, so that woken threads preempt them
        assert slices == {20_000_000} and _slice_of(threading.get_native_id()) != 20_000_000
