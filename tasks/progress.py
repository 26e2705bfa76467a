"""Progress of a stage on the console and in the Prefect run's logs: rows per second and an ETA.

A small stage logs a line per item (who did it, how long, any error), as people reading a demo want.
A large one would drown its log, so past `PER_ITEM_LIMIT` items it logs a progress line every
`INTERVAL` seconds instead (`transfers: 1,200/100,000 (1.2%), 40.1 rows/s, ETA 41 min, 3 failed`),
and errors only for the first `ERROR_LINES` failed items. Every stage ends with one summary line.
"""

from __future__ import annotations

import time
from typing import Callable

PER_ITEM_LIMIT = 100
"""Stages with more items than this log progress lines instead of a line per item."""
INTERVAL = 10.0
"""Seconds between progress lines of a large stage."""
ERROR_LINES = 10
"""A large stage logs the errors of this many failed items; the rest are in the catalogs."""


def duration(seconds: float) -> str:
    """'42 s', '7 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StageProgress:
    """Counts a stage's finished rows and says how it goes (see the module)."""

    def __init__(self, log, stage: str, total: int, per_item_limit: int = PER_ITEM_LIMIT, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.stage, self.total = log, stage, total
        self.per_item = total <= per_item_limit
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()
        self.done = self.failed = 0

    def advance(self, rows: int, failed: int = 0, line: Callable[[], str] | None = None,
                error: str | None = None) -> None:
        """`rows` more finished (`failed` of them failed). A small stage logs `line()`; a large one a
        progress line when INTERVAL has passed, and `error` for its first ERROR_LINES failures."""
        self.done += rows
        self.failed += failed
        if self.per_item:
            if line is not None:
                self.log.info(line())
            return
        if failed and error and self.failed - failed < ERROR_LINES:
            self.log.warning("%s: failed: %s", self.stage, error)
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.log.info(self.status(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (self.clock() if now is None else now) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def status(self, now: float | None = None) -> str:
        """'<stage>: done/total (pct), rows/s, ETA, failed'."""
        rate = self.rate(now)
        left = self.total - self.done
        eta = duration(left / rate) if rate > 0 else "unknown"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.stage}: {self.done:,}/{self.total:,} ({pct:.1f}%), {rate:.2f} rows/s, ETA {eta}"
                + (f", {self.failed:,} failed" if self.failed else ""))

    def finish(self) -> None:
        """The stage's closing line (nothing for a stage that had nothing to do)."""
        if self.total == 0:
            return
        elapsed = self.clock() - self.started
        self.log.info("%s: %s rows in %s, %.2f rows/s%s", self.stage, f"{self.done:,}", duration(elapsed),
                      self.rate(), f", {self.failed:,} failed" if self.failed else "")


__all__ = ["StageProgress", "duration", "PER_ITEM_LIMIT", "INTERVAL"]
