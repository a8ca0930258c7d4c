"""The sampler chain built from Ollama's options."""

from __future__ import annotations

import pytest

from a3s_power.core import _core
from a3s_power.errors import InvalidOptionError
from tests.conftest import CHATML_QUESTION, generate, greedy

STORY = "<|im_start|>user\nTell me a story about a cat.<|im_end|>\n<|im_start|>assistant\n"


def sampled(**extra) -> _core.SamplingParams:
    s = _core.SamplingParams()
    s.temperature = 1.0
    for key, value in extra.items():
        setattr(s, key, value)
    return s


def test_same_seed_same_text_other_seed_other_text(smollm2, make_engine):
    # Fresh engines: a prompt served from the prefix cache evaluates its last token alone, and
    # those logits may differ in the last bits, enough to move a random draw.
    prompt = smollm2.tokenize(STORY, True, True)
    a = generate(make_engine(smollm2), prompt, sampled(seed=42), num_predict=24)
    b = generate(make_engine(smollm2), prompt, sampled(seed=42), num_predict=24)
    c = generate(make_engine(smollm2), prompt, sampled(seed=7), num_predict=24)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_temperature_zero_is_greedy_whatever_the_seed(smollm2, make_engine):
    # Fresh engines, so both runs evaluate the prompt in the same batch shapes.
    prompt = smollm2.tokenize(STORY, True, True)
    a = generate(make_engine(smollm2), prompt, greedy(seed=1), num_predict=16)
    b = generate(make_engine(smollm2), prompt, greedy(seed=2, top_k=5, top_p=0.5), num_predict=16)
    assert a.tokens == b.tokens


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 1},
        {"top_p": 0.01},
        {"min_p": 0.99},
        {"mirostat": 1, "mirostat_tau": 0.1},
        {"mirostat": 2, "mirostat_tau": 0.1},
    ],
)
def test_narrow_samplers_behave_like_greedy(smollm2, make_engine, options):
    # Each option narrowed to its extreme leaves only the most likely token.
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    expected = generate(make_engine(smollm2), prompt, greedy(), num_predict=6).tokens
    got = generate(make_engine(smollm2), prompt, sampled(seed=3, **options), num_predict=6).tokens
    if options.get("mirostat"):
        assert got[0] == expected[0]  # mirostat adapts as it goes; its first pick is the mode
    else:
        assert got == expected


def test_typical_p_at_its_narrowest_leaves_one_candidate(smollm2, make_engine):
    # Locally typical sampling keeps the token whose surprise is nearest the entropy: not the
    # mode, but a single candidate, so the seed no longer matters.
    prompt = smollm2.tokenize(STORY, True, True)
    a = generate(make_engine(smollm2), prompt, sampled(seed=1, typical_p=0.001), num_predict=8).tokens
    b = generate(make_engine(smollm2), prompt, sampled(seed=2, typical_p=0.001), num_predict=8).tokens
    assert a == b
    assert a != generate(make_engine(smollm2), prompt, greedy(), num_predict=8).tokens


def test_logit_bias_bans_a_token(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    base = generate(engine, prompt, greedy(), num_predict=4).tokens
    biased = generate(engine, prompt, greedy(logit_bias=[(base[0], -100.0)]), num_predict=4).tokens
    assert biased[0] != base[0]
    assert base[0] not in biased


def test_repeat_penalty_changes_a_repetitive_answer(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize("one one one one one one one one", True, True)
    plain = generate(engine, prompt, greedy(), num_predict=12).tokens
    penalized = generate(engine, prompt, greedy(repeat_penalty=2.0, repeat_last_n=64), num_predict=12).tokens
    assert plain != penalized
    assert penalized.count(plain[0]) < plain.count(plain[0]) or plain[0] not in penalized


def test_presence_and_frequency_penalties(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize("one one one one one one one one", True, True)
    plain = generate(engine, prompt, greedy(), num_predict=12).tokens
    assert generate(engine, prompt, greedy(presence_penalty=5.0), num_predict=12).tokens != plain
    assert generate(engine, prompt, greedy(frequency_penalty=5.0), num_predict=12).tokens != plain


def test_penalize_newline_false_keeps_newlines_unpenalized(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize("Write each number on its own line:\n1\n2\n3\n4\n5\n", True, True)
    newline = smollm2.tokenize("\n", False, False)[0]
    heavy = dict(repeat_penalty=50.0, repeat_last_n=-1)
    with_nl = generate(engine, prompt, greedy(penalize_newline=True, **heavy), num_predict=10).tokens
    without_nl = generate(engine, prompt, greedy(penalize_newline=False, **heavy), num_predict=10).tokens
    assert without_nl.count(newline) > with_nl.count(newline)


def test_grammar_constrains_the_answer(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize("<|im_start|>user\nIs the sky blue?<|im_end|>\n<|im_start|>assistant\n", True, True)
    result = generate(engine, prompt, sampled(seed=5, grammar='root ::= ("yes" | "no") "!"'), num_predict=20)
    assert result.text in ("yes!", "no!")
    assert result.done_reason == "stop"


def test_grammar_for_json_digits(smollm2, make_engine):
    engine = make_engine(smollm2)
    prompt = smollm2.tokenize(CHATML_QUESTION, True, True)
    grammar = 'root ::= "{\\"n\\": " [0-9]{1,4} "}"'
    result = generate(engine, prompt, greedy(grammar=grammar), num_predict=30)
    import json

    assert isinstance(json.loads(result.text)["n"], int)


def test_invalid_grammar_is_an_invalid_option(smollm2, make_engine):
    engine = make_engine(smollm2)
    with pytest.raises(InvalidOptionError, match="grammar"):
        engine.submit(smollm2.tokenize("hi", True, True),
                      _core.GenerateParams(sampling=greedy(grammar="root ::= ("), num_predict=5))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mirostat", 3, "mirostat"),
        ("repeat_penalty", 0.0, "repeat_penalty"),
        ("repeat_last_n", -5, "repeat_last_n"),
        ("logit_bias", [(10_000_000, 1.0)], "logit_bias"),
    ],
)
def test_impossible_sampling_options(smollm2, make_engine, field, value, message):
    engine = make_engine(smollm2)
    with pytest.raises(InvalidOptionError, match=message):
        engine.submit(smollm2.tokenize("hi", True, True),
                      _core.GenerateParams(sampling=greedy(**{field: value}), num_predict=5))


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0.0},
        {"temperature": 0.0, "repeat_penalty": 1.5, "repeat_last_n": 8},
        {"temperature": 0.0, "logit_bias": [(28, -100.0), (260, 5.0)]},
        {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 42},
        {"temperature": 1.5, "top_k": 200, "min_p": 0.01, "seed": 3, "repeat_penalty": 1.3, "repeat_last_n": 16,
         "penalize_newline": False},
        {"temperature": 1.0, "top_k": 10, "typical_p": 0.7, "seed": 5, "presence_penalty": 1.5,
         "frequency_penalty": 0.5, "repeat_last_n": -1},
    ],
)
def test_shortlisted_sampling_picks_what_the_whole_vocabulary_does(smollm2, make_engine, monkeypatch, options):
    # With a top_k cut (or greedy), the sampler ranks a shortlist of the best logits plus every
    # token logit bias or penalties touch; A3S_POWER_SAMPLER_SHORTLIST=0 ranks every token.
    prompt = smollm2.tokenize(STORY, True, True)
    params = sampled(**{"repeat_penalty": 1.0, **options})
    monkeypatch.setenv("A3S_POWER_SAMPLER_SHORTLIST", "0")
    whole = generate(make_engine(smollm2), prompt, params, num_predict=40)
    monkeypatch.delenv("A3S_POWER_SAMPLER_SHORTLIST")
    short = generate(make_engine(smollm2), prompt, params, num_predict=40)
    assert short.tokens == whole.tokens
    assert len(whole.tokens) > 10
