"""A short soak of the real server (benchmarks/soak.py; issue 16): mixed APIs, a third of the
streams abandoned mid-way, bursts past the queue. Everything is answered or refused with 503, nothing
leaks, nothing crashes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import soak


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_a_short_soak_answers_everything_and_leaks_nothing(smollm2_path):
    # Every kind, embeddings too: a model serves both from two runners over one copy of its weights.
    report = soak.soak(smollm2_path, seconds=25, clients=12)
    assert report["server_exit"] == 0 and report["tracebacks"] == 0, report.get("server_log_tail")
    assert report["problems"] == [], report["problems"][:5]
    outcomes = report["outcomes"]
    assert outcomes.get("answered", 0) > 20 and outcomes.get("left mid-stream", 0) > 0
    assert outcomes.get("refused 503", 0) > 0  # the bursts went past the queue
    assert report["slots_busy_after"] == 0 and report["queued_after"] == 0
    assert report["full_load_problems"] == [] and report["full_load_after"].get("refused 503", 0) == 0
    # Memory settles: no growth per request beyond the allocator's own slack.
    assert report["rss_end_mib"] - report["rss_start_mib"] < 200
