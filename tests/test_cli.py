"""The a3s-power command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def a3s_power(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a3s_power", *args], capture_output=True, text=True, input=input,
                          timeout=300, env=env)


def test_version():
    result = a3s_power("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("a3s-power version is ")


def test_run_answers_a_prompt(smollm2_path):
    result = a3s_power("run", smollm2_path, "--prompt", "What is the capital of France? Answer in one word.")
    assert result.returncode == 0, result.stderr
    # Sampling at Ollama's default temperature: the words vary, an answer is always there.
    assert result.stdout.strip()
    assert result.stdout.endswith("\n")


def test_run_with_a_missing_model_fails_in_one_line(tmp_path):
    result = a3s_power("run", str(tmp_path / "missing.gguf"), "--prompt", "hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: model '{tmp_path / 'missing.gguf'}' not found"]


def test_run_with_a_broken_model_fails_cleanly(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_text("not a model")
    result = a3s_power("run", str(bad), "--prompt", "hi")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "broken.gguf" in result.stderr and "not a GGUF file" in result.stderr


def test_interactive_conversation_in_a_terminal(smollm2_path):
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "a3s_power", "run", smollm2_path], encoding="utf-8", timeout=120)
    try:
        child.expect_exact(">>> ")
        child.sendline("/set parameter temperature 0")
        child.expect_exact("Set parameter 'temperature' to '0'")
        child.expect_exact(">>> ")
        child.sendline("Which city is the capital of France?")
        child.expect_exact("France?\r\n")  # the line's echo; what the model says varies between CPUs
        child.expect(r"\w")  # an answer
        child.expect_exact(">>> ")
        child.sendline('"""Name the capital')
        child.expect_exact("... ")
        child.sendline('city of Germany."""')
        child.expect_exact('Germany."""\r\n')
        child.expect(r"\w")
        child.expect_exact(">>> ")
        child.sendline("Write a very long story about a dragon and a knight.")
        # The echo of the line itself has words in it: wait for the line to end, then for the answer.
        child.expect_exact("knight.\r\n")
        child.expect(r"\w+ \w+ \w+")  # the answer has started
        child.sendintr()  # Ctrl-C stops it and the prompt comes back at once
        child.expect_exact(">>> ", timeout=8)
        assert "failed to decode" not in child.before  # the aborted decode's log is ours to hide
        child.sendline("/clear")
        child.expect_exact("Cleared session context")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
