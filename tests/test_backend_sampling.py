"""Tokens picked inside the decode graph (llama.cpp's backend sampling, ContextParams.backend_sampling).

It is off by default (measured slower on an H200, benchmarks/README.md); on, it runs here on the
CPU backend, so the path is tested on every machine. The host's sampler is the reference: the
same model, engine shape and prompt, on the same machine.
"""

from __future__ import annotations

import threading

from a3s_power.config import Config
from a3s_power.core import _core
from a3s_power.engine.options import LoadOptions, defaults
from tests.conftest import CHATML_QUESTION, collect, generate, greedy

STORY = "<|im_start|>user\nTell me a story about a cat.<|im_end|>\n<|im_start|>assistant\n"


def sampled(**extra) -> _core.SamplingParams:
    return _core.SamplingParams(**{"temperature": 0.8, "top_k": 40, "top_p": 0.9, **extra})


def device_picks(engine: _core.Engine) -> int:
    return engine.stats()["device_picks"]


def test_greedy_in_the_graph_picks_what_the_host_picks(smollm2, make_engine):
    prompt = smollm2.tokenize(STORY, True, True)
    host = make_engine(smollm2, backend_sampling=False)
    device = make_engine(smollm2, backend_sampling=True)
    a = generate(host, prompt, greedy(), num_predict=32)
    b = generate(device, prompt, greedy(), num_predict=32)
    assert (a.done_reason, b.done_reason) == ("length", "length")
    assert b.tokens == a.tokens
    assert device_picks(host) == 0
    assert device_picks(device) == 32  # every token, the first (after the prompt) included


def test_off_by_default(smollm2, make_engine):
    engine = make_engine(smollm2)
    generate(engine, smollm2.tokenize(STORY, True, True), greedy(), num_predict=4)
    assert device_picks(engine) == 0


def test_a_seed_repeats_its_answer_and_another_seed_does_not(smollm2, make_engine):
    prompt = smollm2.tokenize(STORY, True, True)
    # Fresh engines: a prompt served from a slot's cache evaluates only its last token, whose logits
    # may differ in the last bits, enough to move a random draw.
    runs = [generate(make_engine(smollm2, backend_sampling=True), prompt, sampled(seed=s), num_predict=24)
            for s in (42, 42, 7)]
    assert runs[0].tokens == runs[1].tokens
    assert runs[0].tokens != runs[2].tokens


def test_a_logit_bias_applies_in_the_graph(smollm2, make_engine):
    """The bias is the chain's first link on the device: a banned token never comes, a favoured one
    always does, exactly as on the host."""
    prompt = smollm2.tokenize(STORY, True, True)
    first = generate(make_engine(smollm2, backend_sampling=False), prompt, greedy(), num_predict=8).tokens
    ban = greedy(logit_bias=[(t, -100.0) for t in set(first)])
    # Fresh engines on both sides: each evaluates the prompt whole, in the same batch shapes.
    a = generate(make_engine(smollm2, backend_sampling=False), prompt, ban, num_predict=8)
    device = make_engine(smollm2, backend_sampling=True)
    b = generate(device, prompt, ban, num_predict=8)
    assert device_picks(device) == 8
    assert b.tokens == a.tokens and not set(b.tokens) & set(first)
    favour = sampled(seed=5, logit_bias=[(first[0], 100.0)])
    assert generate(device, prompt, favour, num_predict=4).tokens == [first[0]] * 4


def test_options_that_need_the_host_are_picked_there(smollm2, make_engine):
    """Logprobs, penalties, a grammar, mirostat and typical_p need every logit on the host: those
    requests never run a chain in the graph, and their answers are the host's."""
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    host = make_engine(smollm2, backend_sampling=False)
    device = make_engine(smollm2, backend_sampling=True)
    cases = [
        dict(sampling=greedy(), logprobs=True, top_logprobs=2),
        dict(sampling=greedy(repeat_penalty=1.3)),
        dict(sampling=greedy(grammar='root ::= [0-9]+ "."')),
        dict(sampling=sampled(seed=3, mirostat=2)),
        dict(sampling=sampled(seed=3, typical_p=0.5)),
    ]
    for case in cases:
        picks_before = device_picks(device)
        a = generate(host, prompt, num_predict=12, **case)
        b = generate(device, prompt, num_predict=12, **case)
        assert device_picks(device) == picks_before, case
        assert b.tokens == a.tokens, case
        assert [lp.token for lp in b.logprobs] == [lp.token for lp in a.logprobs]
    # And a plain greedy request after them goes back to the graph.
    generate(device, prompt, greedy(), num_predict=3)
    assert device_picks(device) > picks_before


def test_slots_in_the_graph_and_on_the_host_share_steps(smollm2, make_engine):
    """Four slots decode together: two pick in the graph, two on the host (logprobs, a penalty).
    A step with both kinds still brings the logits back for the host's slots."""
    prompts = [smollm2.tokenize(text, True, True) for text in (STORY, CHATML_QUESTION)]
    kinds = [
        dict(sampling=greedy()),
        dict(sampling=greedy(), logprobs=True, top_logprobs=1),
        dict(sampling=greedy(repeat_penalty=1.2)),
        dict(sampling=sampled(seed=11)),
    ]

    def run_all(engine: _core.Engine) -> list:
        ids = []
        for i, kind in enumerate(kinds):
            params = _core.GenerateParams(num_predict=20, shift=False, **kind)
            ids.append(engine.submit(prompts[i % 2], params))
        results = collect(engine, ids)
        return [results[i] for i in ids]

    host = run_all(make_engine(smollm2, n_parallel=4, backend_sampling=False))
    device_engine = make_engine(smollm2, n_parallel=4, backend_sampling=True)
    device = run_all(device_engine)
    # Every pick of the two graph slots, the end-of-generation token's included.
    picks = sum(len(device[i].tokens) + (device[i].done_reason == "stop") for i in (0, 3))
    assert device_picks(device_engine) == picks
    for h, d in zip(host, device):
        assert d.done_reason in ("stop", "length") and not d.error
    # Greedy picks agree; the batch had the same shape on both sides.
    for i in (0, 1, 2):
        assert (device[i].tokens, device[i].done_reason) == (host[i].tokens, host[i].done_reason), i


def test_requests_from_many_threads_in_the_graph(smollm2, make_engine):
    engine = make_engine(smollm2, n_parallel=4, backend_sampling=True)
    prompt = smollm2.tokenize(STORY, True, True)
    reference = generate(make_engine(smollm2, n_parallel=4, backend_sampling=False), prompt, greedy(),
                         num_predict=16).tokens
    ids: list[int] = []

    def submit() -> None:  # submissions race each other; one consumer drains them all
        ids.append(engine.submit(prompt, _core.GenerateParams(sampling=greedy(), num_predict=16, shift=False)))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = list(collect(engine, ids).values())
    assert len(results) == 6
    assert all(r.done_reason == "length" and len(r.tokens) == 16 for r in results)
    assert device_picks(engine) == 6 * 16
    # With a KV buffer per slot and flash attention off, copied prefixes and busy neighbours leave
    # the logits bit for bit as they were (tests/answers.py), so greedy picks are the reference's.
    assert all(r.tokens == reference for r in results)


def test_the_setting_reaches_the_engine(monkeypatch):
    assert LoadOptions().context_params().backend_sampling is False
    assert LoadOptions(backend_sampling=True).context_params().backend_sampling is True
    monkeypatch.setenv("A3S_POWER_BACKEND_SAMPLING", "1")
    assert defaults(Config.from_env()).load.backend_sampling is True
