"""A record of every inference request, kept in SQLite so usage survives restarts, with its cost
by the configured prices (dollars per million input and output tokens; free unless configured) and
its time to first token (0 where unknown, as in rows written before it was kept)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path


class UsageLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Recorded on the event loop at the end of every request: with WAL, NORMAL syncs at
        # checkpoints instead of at every commit (an fsync each, up to tens of ms on a VM disk).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS usage (
            ts REAL NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL,
            input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            duration_ns INTEGER NOT NULL, cost REAL NOT NULL)""")
        self._db.execute("CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(usage)")}
        if "ttft_ns" not in columns:  # a log from before time to first token was kept
            self._db.execute("ALTER TABLE usage ADD COLUMN ttft_ns INTEGER NOT NULL DEFAULT 0")

    def record(self, model: str, endpoint: str, input_tokens: int, output_tokens: int, duration_ns: int,
               cost: float, ts: float | None = None, ttft_ns: int = 0) -> None:
        with self._lock:
            self._db.execute("INSERT INTO usage (ts, model, endpoint, input_tokens, output_tokens, duration_ns, cost, "
                             "ttft_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (ts if ts is not None else time.time(), model, endpoint, input_tokens, output_tokens,
                              duration_ns, cost, ttft_ns))

    def summary(self, start: date | None = None, end: date | None = None, model: str | None = None) -> dict:
        """Totals, and rows per model and day (UTC), between two dates inclusive. A row's ``ttft_ms`` is the
        mean time to first token of its requests that measured one, and ``tokens_per_second`` its output
        tokens over the time spent generating them (after the first token); either is None without data."""
        where: list[str] = []
        args: list[float | str] = []
        if start is not None:
            where.append("ts >= ?")
            args.append(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp())
        if end is not None:
            where.append("ts < ?")
            args.append(datetime(end.year, end.month, end.day, tzinfo=timezone.utc).timestamp() + 86400)
        if model:
            where.append("model = ?")
            args.append(model)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            rows = self._db.execute(
                f"""SELECT date(ts, 'unixepoch') AS day, model, COUNT(*), SUM(input_tokens), SUM(output_tokens),
                           SUM(duration_ns), SUM(cost), AVG(NULLIF(ttft_ns, 0)),
                           SUM(CASE WHEN ttft_ns > 0 AND output_tokens > 1 THEN output_tokens - 1 END),
                           SUM(CASE WHEN ttft_ns > 0 AND output_tokens > 1 THEN duration_ns - ttft_ns END)
                    FROM usage {clause} GROUP BY day, model ORDER BY day, model""", args).fetchall()
        data = [{"date": day, "model": m, "requests": n, "input_tokens": i, "output_tokens": o,
                 "total_tokens": i + o, "duration_ms": d // 1_000_000, "cost": round(c, 8),
                 "ttft_ms": round(ttft / 1e6, 3) if ttft else None,
                 "tokens_per_second": round(gen_tokens / (gen_ns / 1e9), 3) if gen_tokens and gen_ns else None}
                for day, m, n, i, o, d, c, ttft, gen_tokens, gen_ns in rows]
        totals = {"requests": sum(r["requests"] for r in data),
                  "input_tokens": sum(r["input_tokens"] for r in data),
                  "output_tokens": sum(r["output_tokens"] for r in data),
                  "cost": round(sum(r["cost"] for r in data), 8)}
        totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
        return {"object": "usage", "start_date": start.isoformat() if start else None,
                "end_date": end.isoformat() if end else None, "model": model, "data": data, "totals": totals}

    def close(self) -> None:
        with self._lock:
            self._db.close()
