"""How transfers behave: part sizes, parallelism, retries, stall detection. Ollama's values by
default; tests shrink them to exercise the same code paths on small blobs."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1000 * 1000


@dataclass(frozen=True)
class TransferSettings:
    parts: int = 16  # a blob is split into about this many parts...
    min_part: int = 100 * MB  # ...of at least this size...
    max_part: int = 1000 * MB  # ...and at most this size
    parallel: int = 16  # parts fetched at once
    max_retries: int = 6  # per part, for errors other than stalls
    backoff_s: float = 1.0  # the n-th retry waits backoff_s * 2**(n-1)
    stall_s: float = 30.0  # no byte for this long: the part's connection is dropped and retried
    progress_interval_s: float = 0.06  # at most one progress line per layer this often
    state_interval_s: float = 1.0  # how often a part's resume state is saved while it runs
    upload_chunk: int = 100 * MB  # PATCH size when pushing
    connect_timeout_s: float = 30.0
    manifest_retries: int = 1  # a manifest request's retries after a connection failure or 5xx
    # A name the built-in registry also knows gets this long for the registry's manifest (retries
    # and token included) before the pull falls back to the built-in registry.
    manifest_timeout_s: float = 5.0

    def part_size(self, total: int) -> int:
        return max(self.min_part, min(self.max_part, total // max(1, self.parts)))
