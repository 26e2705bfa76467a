"""The last stage of a bulk run: keep the catalogs quick to read.

A run commits rows every 50 or 30 s (tasks.sink.RowSink), one Parquet part each, so a run of a
million transfers leaves about 20,000 parts; reading the ok keys of 20,000 parts took 9.2 s against
0.6 s for one (benchmarks/bench_scale.py), and every re-run's plan reads them. A table left with more
than COMPACT_PARTS parts is compacted at the end of the run (mtcore.data.catalog.compact: safe beside other
runs' readers and writers).
"""

from __future__ import annotations

import os

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore.data.catalog import compact_fragmented

COMPACT_PARTS = int(os.environ.get("MT_COMPACT_PARTS", "1000"))
"""Part files a table may hold before a run compacts it at its end (about 0.5 s of every plan's read)."""


@task(name="compact", cache_policy=NONE)
def compact_stage(out: str, max_parts: int = COMPACT_PARTS) -> dict[str, tuple[int, int, int]]:
    """Compact the catalog tables a run left in more than `max_parts` part files."""
    done = compact_fragmented(out, max_parts)
    for table, (before, after, rows) in done.items():
        get_run_logger().info("catalog/%s: %d part files compacted into %d (%d rows)", table, before, after, rows)
    return done
