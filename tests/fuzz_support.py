"""Shared pieces of the property-based fuzz tests (tests/test_fuzz_*.py, issue 16).

Every fuzz test is derandomized (CI sees the same examples every run) and bounded: a handful of
examples, a per-example deadline, and a hard time limit that turns a hang into a failure instead
of a stuck suite. Set A3S_FUZZ_EXAMPLES to run more examples locally (and randomly) when
hunting for bugs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import timedelta

from hypothesis import HealthCheck, settings


class Hang(BaseException):
    """An example ran past its hard time limit (BaseException: the code under test cannot catch it)."""


_HUNT = int(os.environ.get("A3S_FUZZ_EXAMPLES", "0"))


def fuzz_settings(max_examples: int, deadline_ms: int = 2000) -> settings:
    """CI: ``max_examples`` derandomized examples. Hunting: as many random ones as asked for."""
    return settings(
        max_examples=_HUNT or max_examples,
        deadline=timedelta(milliseconds=deadline_ms),
        derandomize=not _HUNT,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        print_blob=True,
    )


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raises :class:`Hang` in the block once it has run ``seconds`` (main thread only; elsewhere
    the hypothesis deadline still reports slow examples)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise Hang(f"example still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
