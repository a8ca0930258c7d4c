"""What the commands print, as Ollama's CLI prints it: sizes, durations and times as its format
package writes them, tables, and progress bars for transfers."""

from __future__ import annotations

import math
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from typing import Any, cast


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            value = n / size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{int(n)} B"


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600 / 24 / 365)} years"


def human_time(when: datetime | None, zero: str = "Never") -> str:
    if when is None:
        return zero
    delta = (datetime.now(timezone.utc) - when).total_seconds()
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        # Go writes up to nine fractional digits; Python reads six.
        head, dot, rest = text.partition(".")
        if dot:
            digits = cast(re.Match[str], re.match(r"\d*", rest)).group(0)  # \d* matches anywhere
            zone = rest[len(digits):]
            text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell and three spaces apart, as Ollama's tables are."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


class ProgressPrinter:
    """Renders a progress stream: a bar per status that has a total, a line for the others."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.current: str | None = None  # the status whose bar is on the last line
        self.started: dict[str, tuple[float, int]] = {}
        self.last_line = ""

    def _bar(self, status: str, total: int, completed: int) -> str:
        pct = int(100 * completed / total) if total else 100
        width = 20 if not self.tty else max(10, min(50, shutil.get_terminal_size().columns - len(status) - 45))
        filled = int(width * completed / total) if total else width
        bar = "▕" + "█" * filled + " " * (width - filled) + "▏"
        if completed >= total:
            return f"{status}: {pct:3d}% {bar} {human_bytes(total)}"
        t0, c0 = self.started.setdefault(status, (time.monotonic(), completed))
        elapsed = time.monotonic() - t0
        rate = (completed - c0) / elapsed if elapsed > 0.5 else 0
        stats = f"{human_bytes(completed)}/{human_bytes(total)}"
        if rate > 0:
            eta = (total - completed) / rate
            stats += f"  {human_bytes(rate)}/s  {int(eta // 60)}m{int(eta % 60)}s" if eta >= 60 else \
                f"  {human_bytes(rate)}/s  {int(eta)}s"
        return f"{status}: {pct:3d}% {bar} {stats}"

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif final:
            self.out.write(text + "\n")
        self.out.flush()

    def update(self, item: dict[str, Any]) -> None:
        status = item.get("status", "")
        total = item.get("total") or 0
        if status != self.current and self.current is not None:
            self._write(self.last_line, final=True)  # the previous bar stays where it was
            self.current = None
        if total:
            self.current = status
            self.last_line = self._bar(status, total, item.get("completed") or 0)
            self._write(self.last_line, final=False)
        elif status:
            self._write(status, final=True)

    def finish(self) -> None:
        if self.current is not None:
            self._write(self.last_line, final=True)
            self.current = None
