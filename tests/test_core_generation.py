"""The engine's generation behaviour: stops, limits, UTF-8, cancellation, slots and the prefix cache."""

from __future__ import annotations

import os
import time

import pytest

from a3s_power.core import _core
from tests.answers import assert_same_greedy
from tests.conftest import CHATML_QUESTION, collect, generate, greedy


def no_end(model) -> _core.SamplingParams:
    """Greedy, with the end of generation banned: the run lasts as long as num_predict says, whatever
    this CPU makes the model say."""
    return greedy(logit_bias=[(model.eos_token, -100.0)])


def test_answer_stops_at_end_of_generation(smollm2, make_engine):
    engine = make_engine(smollm2)
    result = generate(engine, smollm2.tokenize(CHATML_QUESTION, True, True))
    assert result.done_reason == "stop"
    assert result.text.strip()
    assert result.text == smollm2.detokenize(result.tokens)
    assert not any(smollm2.is_eog(t) for t in result.tokens)


def test_timings_are_reported_in_nanoseconds(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    result = generate(engine, prompt, no_end(smollm2), num_predict=5)
    t = result.timings
    assert t["prompt_tokens"] == len(prompt)
    assert t["prompt_eval_count"] == len(prompt)
    assert t["eval_count"] == 5
    assert 0 < t["prompt_eval_duration"] < 60e9
    assert 0 < t["eval_duration"] < 60e9


def test_num_predict_ends_with_length(smollm2, make_engine):
    engine = make_engine(smollm2)
    result = generate(engine, smollm2.tokenize("Once upon a time", True, True), no_end(smollm2), num_predict=7)
    assert result.done_reason == "length"
    assert len(result.tokens) == 7


def test_stop_string_spanning_tokens_is_never_emitted(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    answer = generate(engine, prompt)
    full = answer.text
    # A stop string from the answer itself that starts inside one token and ends inside another.
    pieces = [smollm2.detokenize([t]) for t in answer.tokens]
    i = next(i for i in range(1, len(pieces) - 2) if len(pieces[i]) >= 2 and len(pieces[i + 2]) >= 2)
    start = sum(len(p) for p in pieces[:i]) + 1
    stop = full[start:start + len(pieces[i]) - 1 + len(pieces[i + 1]) + 1]
    result = generate(engine, prompt, stop=[stop, "never appears"])
    assert result.done_reason == "stop"
    assert result.text == full[: full.index(stop)]
    assert stop not in result.text


def test_stop_string_at_the_very_start(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    full = generate(engine, prompt).text
    result = generate(engine, prompt, stop=[full[:3]])
    assert result.text == ""
    assert result.done_reason == "stop"


def test_characters_split_across_tokens_come_out_whole(tiny, make_engine):
    # The tiny model's vocabulary has single bytes only, so each emoji takes four tokens.
    engine = make_engine(tiny)
    text = "😀é中"
    grammar = 'root ::= "' + text + '"'
    result = generate(engine, tiny.tokenize("<|im_start|>user\nhi", False, True), greedy(grammar=grammar),
                      num_predict=len(text.encode()) + 4)
    assert len(result.tokens) == len(text.encode())
    assert result.text == text
    assert all("\ufffd" not in e.text for e in result.events)


def test_invalid_bytes_become_replacement_characters(tiny, make_engine):
    # Random weights emit arbitrary bytes: our text must equal a standard UTF-8 decode with
    # replacement, never raise, and never hold back a finished character.
    engine = make_engine(tiny)
    for seed in range(3):
        sampling = greedy(temperature=1.5, seed=seed, top_k=0, top_p=1.0)
        result = generate(engine, tiny.tokenize("abc", False, True), sampling, num_predict=64)
        raw = b"".join(tiny.token_to_piece(t) for t in result.tokens)
        assert result.text == raw.decode("utf-8", "replace")


def test_cancel_stops_a_running_generation(smollm2, make_engine):
    engine = make_engine(smollm2)
    no_end = greedy(logit_bias=[(smollm2.eos_token, -100.0)])
    rid = engine.submit(smollm2.tokenize("Write a very long story about dragons.", True, True),
                        _core.GenerateParams(sampling=no_end, num_predict=100000))
    first = []
    while not first:
        first = [e for e in engine.drain(1000) if e.id == rid]
    assert not first[-1].done
    engine.cancel(rid)
    result = collect(engine, [rid])[rid]
    assert result.done_reason == "cancel"
    assert len(result.tokens) < 100_000  # it stopped long before its num_predict
    # The engine is still fine afterwards.
    again = generate(engine, smollm2.tokenize(CHATML_QUESTION, True, True), num_predict=3)
    assert again.done_reason == "length"


def test_cancel_while_queued(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=1)
    long_prompt = smollm2.tokenize("Tell me everything about the ocean.", True, True)
    busy = engine.submit(long_prompt, _core.GenerateParams(sampling=greedy(), num_predict=200))
    queued = engine.submit(long_prompt, _core.GenerateParams(sampling=greedy(), num_predict=200))
    engine.cancel(queued)
    results = collect(engine, [busy, queued])
    assert results[queued].done_reason == "cancel"
    assert results[queued].tokens == []
    assert results[busy].done_reason in ("stop", "length")


def test_more_requests_than_slots_all_finish(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=2)
    prompts = [f"Count from {i} to {i + 10}:" for i in range(5)]
    ids = [engine.submit(smollm2.tokenize(p, True, True), _core.GenerateParams(sampling=greedy(), num_predict=12))
           for p in prompts]
    stats = engine.stats()
    assert stats["slots"] == 2
    results = collect(engine, ids)
    for rid in ids:
        assert results[rid].done_reason in ("stop", "length")
        assert 0 < len(results[rid].tokens) <= 12
    assert engine.stats()["slots_busy"] == 0
    assert engine.stats()["queued"] == 0


def test_concurrent_streams_are_batched_together(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=4)
    prompt = smollm2.tokenize("List the planets of the solar system:", True, True)
    steps_before = engine.stats()["steps"]
    ids = [engine.submit(prompt, _core.GenerateParams(sampling=no_end(smollm2), num_predict=20)) for _ in range(4)]
    results = collect(engine, ids)
    assert all(len(results[i].tokens) == 20 for i in ids)
    steps = engine.stats()["steps"] - steps_before
    # Four streams of 20 tokens one after another would take at least 80 decode steps.
    assert steps < 40


def test_prefix_cache_reuses_a_conversation(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=2)
    turn1 = smollm2.tokenize(CHATML_QUESTION, True, True)
    first = generate(engine, turn1, num_predict=8)
    assert first.timings["cached_tokens"] == 0
    follow_up = smollm2.tokenize("<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n",
                                 False, True)
    turn2 = turn1 + first.tokens + follow_up
    second = generate(engine, turn2, num_predict=8)
    assert second.timings["cached_tokens"] >= len(turn1) + len(first.tokens) - 1
    assert second.timings["prompt_eval_count"] == len(turn2) - second.timings["cached_tokens"]


def test_same_prompt_twice_evaluates_only_the_last_token(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    a = generate(engine, prompt, num_predict=6, logprobs=True, top_logprobs=2)
    b = generate(engine, prompt, num_predict=6, logprobs=True, top_logprobs=2)
    assert b.timings["cached_tokens"] == len(prompt) - 1
    assert b.timings["prompt_eval_count"] == 1
    assert_same_greedy(b, a)


def test_context_full_ends_with_length(smollm2, make_engine):
    engine = make_engine(smollm2, n_ctx=64)
    prompt = smollm2.tokenize("Write a long essay about the history of mathematics.", True, True)
    result = generate(engine, prompt, greedy(logit_bias=[(smollm2.eos_token, -100.0)]))
    assert result.done_reason == "length"
    assert len(prompt) + len(result.tokens) <= 64


def test_logprobs(smollm2, make_engine):
    engine = make_engine(smollm2)
    result = generate(engine, smollm2.tokenize(CHATML_QUESTION, True, True), num_predict=5, logprobs=True,
                      top_logprobs=3)
    assert len(result.logprobs) == 5
    for token, lp in zip(result.tokens, result.logprobs):
        assert lp.token == token
        assert lp.logprob <= 0
        assert len(lp.top) == 3
        assert [c.logprob for c in lp.top] == sorted((c.logprob for c in lp.top), reverse=True)
        assert lp.top[0].token == token  # greedy picks the most likely token
        assert lp.top[0].logprob == pytest.approx(lp.logprob)


def test_prompt_longer_than_context_is_refused(smollm2, make_engine):
    from a3s_power.errors import InvalidOptionError

    engine = make_engine(smollm2, n_ctx=16)
    with pytest.raises(InvalidOptionError, match="num_ctx 16"):
        engine.submit(list(range(1, 40)), _core.GenerateParams(sampling=greedy(), num_predict=5))


def test_bad_token_ids_are_refused(smollm2, make_engine):
    from a3s_power.errors import InvalidOptionError

    engine = make_engine(smollm2)
    with pytest.raises(InvalidOptionError, match="outside the vocabulary"):
        engine.submit([1, 2, 10_000_000], _core.GenerateParams(sampling=greedy(), num_predict=5))
    with pytest.raises(InvalidOptionError, match="no tokens"):
        engine.submit([], _core.GenerateParams(sampling=greedy(), num_predict=5))


def test_context_shift_keeps_generating_past_a_full_context(smollm2, make_engine):
    engine = make_engine(smollm2, n_ctx=64)
    prompt = smollm2.tokenize("Write a long essay about the history of mathematics.", True, True)
    no_end = greedy(logit_bias=[(smollm2.eos_token, -100.0)])
    rid = engine.submit(prompt, _core.GenerateParams(sampling=no_end, num_predict=150, shift=True, num_keep=4))
    result = collect(engine, [rid])[rid]
    assert result.done_reason == "length" and len(result.tokens) == 150  # ended by num_predict, not the context
    rid = engine.submit(prompt, _core.GenerateParams(sampling=no_end, num_predict=150, shift=False, num_keep=4))
    assert len(collect(engine, [rid])[rid].tokens) < 64


@pytest.mark.parametrize("kv_unified", [False, True], ids=["buffer-per-slot", "one-buffer"])
def test_a_shared_system_prompt_is_copied_between_slots(smollm2, make_engine, kv_unified):
    engine = make_engine(smollm2, n_parallel=2, kv_unified=kv_unified)
    system = "<|im_start|>system\n" + "You are a careful assistant who knows a great deal about geography. " * 6 + \
        "<|im_end|>\n"
    first = smollm2.tokenize(system + "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n",
                             True, True)
    second = smollm2.tokenize(system + "<|im_start|>user\nCapital of Spain?<|im_end|>\n<|im_start|>assistant\n",
                              True, True)
    busy = engine.submit(first, _core.GenerateParams(sampling=greedy(logit_bias=[(smollm2.eos_token, -100.0)]),
                                                     num_predict=40))
    while not any(e.id == busy for e in engine.drain(1000)):
        pass
    # The first slot is busy: the second request gets the other slot, and the system prompt's cells
    # come from the first slot instead of being evaluated again.
    other = engine.submit(second, _core.GenerateParams(sampling=greedy(), num_predict=8, logprobs=True, top_logprobs=2))
    result = collect(engine, [busy, other])[other]
    shared = len(smollm2.tokenize(system, True, True)) - 2
    assert result.timings["cached_tokens"] >= shared
    # Against the same prompt evaluated cold and alone: the suffix was evaluated in other batch
    # shapes (beside the busy slot's token, over cells that sit among another sequence's), so the
    # logits may differ in rounding, never by more (assert_same_greedy says what is guaranteed).
    alone = generate(make_engine(smollm2, n_parallel=1), second, num_predict=8, logprobs=True, top_logprobs=2)
    assert_same_greedy(result, alone)


@pytest.mark.parametrize("kv_unified", [False, True], ids=["buffer-per-slot", "one-buffer"])
def test_a_conversation_pushed_out_of_its_slot_comes_back_from_host_memory(smollm2, make_engine, kv_unified):
    def chat(question: str) -> list[int]:
        system = "<|im_start|>system\n" + f"You answer questions about {question.split()[-1]} " * 12 + "<|im_end|>\n"
        return smollm2.tokenize(system + f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
                                True, True)

    engine = make_engine(smollm2, n_parallel=1, kv_unified=kv_unified, prompt_cache_mb=64)
    first = chat("What is the capital of France?")
    a1 = generate(engine, first, num_predict=8, logprobs=True, top_logprobs=2)
    generate(engine, chat("What is the tallest mountain of Japan?"), num_predict=8)  # takes the only slot
    follow_up = smollm2.tokenize("<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n",
                                 False, True)
    turn2 = first + a1.tokens + follow_up
    back = generate(engine, turn2, num_predict=8, logprobs=True, top_logprobs=2)
    assert back.timings["cached_tokens"] >= len(first) + len(a1.tokens) - 1
    cold = generate(make_engine(smollm2, n_parallel=1, kv_unified=kv_unified), turn2, num_predict=8,
                    logprobs=True, top_logprobs=2)
    assert cold.timings["cached_tokens"] == 0
    assert_same_greedy(back, cold)


def test_the_prompt_cache_stops_copying_when_conversations_do_not_come_back(smollm2, make_engine):
    """Each save is a copy off the device while every slot waits. After 32 saves with no return, only
    one pushed-out conversation in 8 is kept; once let-go conversations come back, all are again."""
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=256)

    def conversation(i: int) -> list[int]:  # over 64 tokens: worth keeping
        return smollm2.tokenize(f"<|im_start|>user\nRequest number {i}. " + "Tell me more. " * 20, True, True)

    for i in range(48):  # one-shot prompts: each pushes the last one out of the only slot
        generate(engine, conversation(i), num_predict=1)
    stats = engine.stats()
    assert (stats["prompt_cache_saved"], stats["prompt_cache_restored"]) == (33, 0)  # 32, then 1 of the next 15
    assert stats["prompt_cache_skipped"] == 14
    # Five of the let-go conversations come back (re-evaluated: they were not kept); the next
    # pushed out is kept again.
    for i in range(40, 45):
        generate(engine, conversation(i) + smollm2.tokenize(" And then?", False, False), num_predict=1)
    saved = engine.stats()["prompt_cache_saved"]
    generate(engine, conversation(100), num_predict=1)
    assert engine.stats()["prompt_cache_saved"] == saved + 1


def _chat(model, question: str) -> list[int]:
    system = "<|im_start|>system\n" + f"You answer questions about {question.split()[-1]} " * 12 + "<|im_end|>\n"
    return model.tokenize(system + f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n", True, True)


def _follow_up(model, first: list[int], answer: list[int]) -> list[int]:
    return first + answer + model.tokenize("<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n"
                                           "<|im_start|>assistant\n", False, True)


def test_a_conversation_comes_back_from_disk_after_the_engine_closed(smollm2, make_engine, tmp_path):
    """What a slot holds is written to the disk tier when the engine closes (a restart, a model
    swapped out); a new engine over the same folder restores it for the next turn."""
    folder = str(tmp_path / "prompts")
    first = _chat(smollm2, "What is the capital of France?")
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64, prompt_cache_dir=folder, prompt_cache_disk_mb=64)
    a1 = generate(engine, first, num_predict=8)
    engine.close()
    files = list((tmp_path / "prompts").glob("*.kv"))
    assert len(files) == 1 and not list((tmp_path / "prompts").glob("*.tmp"))

    again = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64, prompt_cache_dir=folder, prompt_cache_disk_mb=64)
    assert again.stats()["prompt_cache_disk_bytes"] == files[0].stat().st_size
    turn2 = _follow_up(smollm2, first, a1.tokens)
    back = generate(again, turn2, num_predict=8, logprobs=True, top_logprobs=2)
    assert back.timings["cached_tokens"] >= len(first) + len(a1.tokens) - 1
    assert again.stats()["prompt_cache_from_disk"] == 1
    cold = generate(make_engine(smollm2, n_parallel=1), turn2, num_predict=8, logprobs=True, top_logprobs=2)
    assert_same_greedy(back, cold)


def test_conversations_pushed_out_of_memory_go_to_disk_and_come_back(smollm2, make_engine, tmp_path):
    """Host memory for about one conversation: the older one leaves it for the disk tier, and its
    next turn is read back from there."""
    folder = str(tmp_path / "prompts")
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=3, prompt_cache_dir=folder, prompt_cache_disk_mb=64)
    first = _chat(smollm2, "What is the capital of France?")
    a1 = generate(engine, first, num_predict=8)
    for topic in ("Japan", "Peru", "Kenya"):  # each pushes the last out of the slot, and memory holds one
        generate(engine, _chat(smollm2, f"What is the tallest mountain of {topic}"), num_predict=8)
    assert engine.stats()["prompt_cache_disk_bytes"] > 0
    back = generate(engine, _follow_up(smollm2, first, a1.tokens), num_predict=4)
    assert back.timings["cached_tokens"] >= len(first) + len(a1.tokens) - 1
    assert engine.stats()["prompt_cache_from_disk"] == 1


def test_a_torn_file_is_dropped_not_restored(smollm2, make_engine, tmp_path):
    folder = tmp_path / "prompts"
    first = _chat(smollm2, "What is the capital of France?")
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64, prompt_cache_dir=str(folder),
                         prompt_cache_disk_mb=64)
    a1 = generate(engine, first, num_predict=8)
    engine.close()
    (kept,) = folder.glob("*.kv")
    with open(kept, "r+b") as f:  # as a crash in the middle of a write (without the rename) would not leave it
        f.truncate(kept.stat().st_size // 2)
    (folder / "0123.kv.tmp").write_bytes(b"half")
    again = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64, prompt_cache_dir=str(folder),
                        prompt_cache_disk_mb=64)
    assert again.stats()["prompt_cache_disk_bytes"] == 0 and not list(folder.iterdir())
    turn2 = _follow_up(smollm2, first, a1.tokens)
    assert generate(again, turn2, num_predict=4).timings["cached_tokens"] == 0


def test_the_disk_tier_keeps_within_its_bound(smollm2, make_engine, tmp_path):
    folder = tmp_path / "prompts"
    for topic in ("France", "Japan", "Peru", "Kenya", "Chile"):  # each engine leaves one conversation
        engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64, prompt_cache_dir=str(folder),
                             prompt_cache_disk_mb=6)
        generate(engine, _chat(smollm2, f"What is the capital of {topic}?"), num_predict=8)
        engine.close()
    sizes = [f.stat().st_size for f in folder.glob("*.kv")]
    assert 1 <= len(sizes) < 5 and sum(sizes) <= 6 << 20


def test_without_a_prompt_cache_a_pushed_out_conversation_is_evaluated_again(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=0)
    first = smollm2.tokenize("<|im_start|>system\n" + "Answer briefly. " * 30 + "<|im_end|>\n", True, True)
    generate(engine, first, num_predict=4)
    other = smollm2.tokenize("<|im_start|>user\nSomething else entirely.", True, True)
    generate(engine, other, num_predict=4)
    shared = next(i for i, (a, b) in enumerate(zip(first, other)) if a != b)  # the start token, say
    assert generate(engine, first, num_predict=4).timings["cached_tokens"] == shared


def test_a_released_prompt_cache_frees_its_memory_and_the_conversation_is_evaluated_again(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=1, prompt_cache_mb=64)
    first = smollm2.tokenize("<|im_start|>system\n" + "Answer briefly. " * 30 + "<|im_end|>\n", True, True)
    generate(engine, first, num_predict=4)
    other = smollm2.tokenize("<|im_start|>user\nSomething else entirely.", True, True)
    generate(engine, other, num_predict=4)  # pushes the first conversation out of the only slot
    held = engine.stats()["prompt_cache_bytes"]
    assert held > 0
    assert engine.release_prompt_cache() == held
    assert engine.stats()["prompt_cache_bytes"] == 0 and engine.release_prompt_cache() == 0
    shared = next(i for i, (a, b) in enumerate(zip(first, other)) if a != b)
    assert generate(engine, first, num_predict=4).timings["cached_tokens"] == shared


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_idle_engines_end_their_threads_and_the_next_request_starts_them(smollm2, make_engine):
    # Each thread that computes keeps an OpenMP team: with two models loaded, the idle one's team
    # would slow the other's decode. Of engines all idle, one keeps its thread.
    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    engines = [make_engine(smollm2, n_threads=2) for _ in range(2)]
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    first = [generate(e, prompt, num_predict=8, logprobs=True, top_logprobs=2) for e in engines]
    busy = threads()
    deadline = time.monotonic() + 10
    while threads() > busy - 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert threads() <= busy - 2  # an engine's thread and its OpenMP worker are gone
    for engine, before in zip(engines, first):
        assert_same_greedy(generate(engine, prompt, num_predict=8, logprobs=True, top_logprobs=2), before)


def test_slots_show_what_each_holds(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=2)
    assert engine.slots() == [{"id": i, "busy": False, "cached_tokens": 0, "generated": 0} for i in range(2)]
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    rid = engine.submit(prompt, _core.GenerateParams(sampling=greedy(), num_predict=200, shift=False))
    seen_busy = False
    for _ in range(400):  # while it generates, one slot is busy and holds the prompt and more
        view = engine.slots()
        if any(s["busy"] and s["cached_tokens"] >= len(prompt) and s["generated"] > 0 for s in view):
            seen_busy = True
            break
        time.sleep(0.005)
    result = collect(engine, [rid])[rid]
    assert seen_busy
    after = engine.slots()
    held = [s for s in after if s["cached_tokens"]]
    assert not any(s["busy"] for s in after) and len(held) == 1
    # The prompt and every token generated but the last, which was never evaluated.
    assert held[0]["cached_tokens"] == len(prompt) + len(result.tokens) - (result.done_reason == "length")
