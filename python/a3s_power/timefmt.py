"""Times and durations as Ollama's Go code writes and reads them."""

from __future__ import annotations

import re
from datetime import datetime, timezone


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


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): ``1.5s``, ``2m3.25s``, ``578.161675ms``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return sign + f"{ns / 1e3:.3f}".rstrip("0").rstrip(".") + "µs"
    if ns < 1_000_000_000:
        return sign + f"{ns / 1e6:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """A Go duration string ("5m", "1h30m", "-1m", "0") in seconds."""
    s = text.strip()
    if s in ("0", "-0", "+0"):
        return 0.0
    match = re.fullmatch(r"([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+", s)
    if not match:
        raise ValueError(f'time: invalid duration "{text}"')
    total = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", s))
    return -total if match.group(1) == "-" else total


FOREVER = -1.0  # a keep-alive that never ends


def parse_keep_alive(value) -> float | None:
    """Ollama's keep_alive: a number of seconds, or a Go duration string; negative = forever."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        return FOREVER if value < 0 else float(value)
    if isinstance(value, str):
        seconds = parse_go_duration(value)
        return FOREVER if seconds < 0 else seconds
    raise ValueError(f"invalid keep_alive {value!r}")
