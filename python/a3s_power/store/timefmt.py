"""Timestamps as Ollama's Go server writes them (RFC 3339 with nanoseconds, zeros trimmed)."""

from __future__ import annotations

from datetime import datetime


def rfc3339(dt: datetime) -> str:
    """``2024-05-01T10:00:00.123456-07:00``; ``Z`` for UTC, as Go's RFC3339Nano prints it."""
    dt = dt if dt.tzinfo is not None else dt.astimezone()
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    offset = dt.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
