"""Stage progress: a line per item for small stages; rows per second and an ETA for large ones."""

from __future__ import annotations

import logging

from tasks.progress import StageProgress, duration


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def logger(name: str):
    log = logging.getLogger(f"test-progress-{name}")
    log.setLevel(logging.INFO)
    handler = Lines()
    log.addHandler(handler)
    return log, handler.lines


def test_a_small_stage_logs_each_item():
    log, lines = logger("small")
    progress = StageProgress(log, "transfers", 3, per_item_limit=10)
    for i in range(3):
        progress.advance(1, 0, lambda: f"item {progress.done}")
    progress.finish()
    assert lines[:3] == ["item 1", "item 2", "item 3"] and lines[3].startswith("transfers: 3 rows in ")


def test_a_large_stage_logs_rate_and_eta_not_items():
    log, lines = logger("large")
    now = [0.0]
    progress = StageProgress(log, "transfers", 100_000, per_item_limit=10, interval=10.0, clock=lambda: now[0])
    for step in range(1, 301):  # 300 batches of 10 rows, one every 0.25 s: 40 rows/s
        now[0] = step * 0.25
        progress.advance(10, 1 if step % 100 == 0 else 0, lambda: "item line", error=f"boom {step}")
    assert "item line" not in lines
    status = [line for line in lines if "rows/s" in line]
    assert len(status) == 7  # every 10 s of 75 s
    assert status[-1] == "transfers: 2,800/100,000 (2.8%), 40.00 rows/s, ETA 40 min, 2 failed"
    assert [line for line in lines if "boom" in line] == [f"transfers: failed: boom {s}" for s in (100, 200, 300)]
    assert duration(42) == "42 s" and duration(3 * 3600) == "3.0 h"
