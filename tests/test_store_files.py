"""The pure-Python GGUF reader, Modelfiles, parameters, capabilities and show's text."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from a3s_power.core import _core
from a3s_power.store.capabilities import derive
from a3s_power.store.details import human_number
from a3s_power.store.gguf import GGUFError, read_gguf
from a3s_power.store.modelfile import ModelfileError, create_plan, parse_modelfile
from a3s_power.store.parameters import go_quote, parameters_text


def test_gguf_header_matches_llama_cpp(smollm2_path):
    g = read_gguf(smollm2_path, max_array=5)
    model = _core.Model(smollm2_path)
    try:
        assert g.version == 3
        assert g.architecture == model.architecture == "llama"
        assert g.parameter_count == model.n_params == 134515008
        assert g.arch_key("context_length") == model.n_ctx_train
        assert g.file_type == "Q4_1"
        for key in ("general.basename", "tokenizer.ggml.model", "llama.block_count"):
            assert str(g.metadata[key]) == model.meta(key)
    finally:
        model.close()
    assert g.metadata["tokenizer.ggml.tokens"] == []  # longer than 5: skipped, never read
    assert g.tensors[0].name == "token_embd.weight" and g.tensors[0].type_name == "Q8_0"
    full = read_gguf(smollm2_path)
    assert len(full.metadata["tokenizer.ggml.tokens"]) == 49152
    assert human_number(g.parameter_count) == "134.52M"


def test_gguf_rejects_truncated_and_foreign_files(tmp_path, tiny_path):
    data = open(tiny_path, "rb").read()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(tmp_path / "cut.gguf")
    (tmp_path / "header.gguf").write_bytes(data[:100])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(tmp_path / "header.gguf")
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 40)
    with pytest.raises(GGUFError, match="version 1"):
        read_gguf(tmp_path / "v1.gguf")
    (tmp_path / "html.gguf").write_bytes(b"<html>" + b"\0" * 40)
    with pytest.raises(GGUFError, match="not a GGUF"):
        read_gguf(tmp_path / "html.gguf")


def test_modelfile_parses_every_form():
    mf = parse_modelfile('\ufeff# a comment\nfrom llama3.2\nPARAMETER stop "<|im_end|>"\nparameter stop </s>\n'
                         'Parameter temperature 0.7\nSYSTEM """You are\n"helpful"."""\nTEMPLATE "{{ .Prompt }}"\n'
                         'LICENSE MIT\nLICENSE """Second\nlicense"""\nMESSAGE user Hi #1\nmessage assistant Hello!\n')
    plan = create_plan(mf, Path("."))
    assert plan.body == {
        "from": "llama3.2", "system": 'You are\n"helpful".', "template": "{{ .Prompt }}",
        "license": ["MIT", "Second\nlicense"],
        "messages": [{"role": "user", "content": "Hi #1"}, {"role": "assistant", "content": "Hello!"}],
        "parameters": {"stop": ["<|im_end|>", "</s>"], "temperature": 0.7},
    }
    assert plan.uploads == {}


def test_modelfile_from_file_becomes_an_upload(tmp_path, tiny_path):
    import shutil

    shutil.copy(tiny_path, tmp_path / "w.gguf")
    plan = create_plan(parse_modelfile("FROM ./w.gguf\nADAPTER w.gguf"), tmp_path)
    digest = next(iter(plan.uploads))
    assert plan.body["files"] == {"w.gguf": digest} and plan.body["adapters"] == {"w.gguf": digest}
    assert plan.uploads[digest] == tmp_path / "w.gguf"


@pytest.mark.parametrize("text, message", [
    ("FROM x\nBOGUS y", "(line 2): unknown command 'BOGUS'"),
    ("SYSTEM hi", "no FROM line"),
    ("FROM x\n\nSYSTEM \"\"\"never closed", "(line 3): unterminated"),
    ("FROM x\nSYSTEM \"open", "(line 2): unterminated quote"),
    ("FROM x\nPARAMETER", "(line 2): missing parameter name"),
    ("FROM x\nPARAMETER temperature", "(line 2): missing value"),
    ("FROM x\nMESSAGE robot hi", '(line 2): message role must be one of "system", "user", or "assistant"'),
    ("FROM x\n# ok\nPARAMETER nope 1", "(line 3): unknown parameter 'nope'"),
    ("FROM x\nPARAMETER num_ctx lots", "(line 2): invalid parameter 'num_ctx'"),
    ("FROM x\nTEMPLATE \"\"\"a\"\"\" trailing", "unexpected text after closing"),
    ("FROM ./missing.gguf\nADAPTER ./missing-adapter.gguf", "(line 2): adapter file"),
])
def test_modelfile_errors_name_the_line(text, message):
    with pytest.raises(ModelfileError) as err:
        create_plan(parse_modelfile(text), Path("/nonexistent"))
    assert message in str(err.value)


def test_parameters_text_is_gos():
    text = parameters_text({"temperature": 0.7, "num_ctx": 4096, "stop": ["<|eot_id|>", "a\tb\"c"],
                            "penalize_newline": False})
    assert text.splitlines() == [
        "num_ctx                        4096", "penalize_newline               false",
        'stop                           "<|eot_id|>"', 'stop                           "a\\tb\\"c"',
        "temperature                    0.7"]
    assert go_quote("é\x01\n") == '"é\\x01\\n"'


def test_capabilities():
    llama = {"general.architecture": "llama"}
    assert derive(llama, None) == ["completion"]
    assert derive({**llama, "llama.pooling_type": 1}, None) == ["embedding"]
    assert derive(llama, "{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}{{ .Suffix }}") == \
        ["completion", "tools", "insert"]
    assert derive(llama, "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}") == ["completion", "thinking"]
    assert derive(llama, "{% if tools %}{{ tools }}{% endif %}{% if enable_thinking %}{% endif %}") == \
        ["completion", "tools", "thinking"]
    assert derive({"general.architecture": "mllama", "mllama.vision.block_count": 8}, None) == \
        ["completion", "vision"]
    assert derive(llama, None, has_projector=True) == ["completion", "vision"]
    assert derive({**llama, "tokenizer.ggml.fim_pre_token_id": 5}, "{% for m in messages %}{% endfor %}") == \
        ["completion", "insert"]
