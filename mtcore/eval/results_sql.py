"""A run's results as one DuckDB table, for reading a catalog of any size in bounded memory.

`query_results(out, metrics_version, run_id, fn)` opens DuckDB over the catalogs' Parquet parts (its own
reader streams the columns a query needs; object storage through the storage layer's fsspec filesystem)
with a memory limit (beyond it DuckDB spills to a temporary folder), builds the temporary table
`results` and returns `fn(con)`. `results` holds what `evaluation.load_results` gives in pandas: one row
per transfer key (its latest row, an ok row winning over later failures), joined with its metrics of
the version (latest row per key; NaN as NULL), with `model_label` and `config_label`. The views
`transfers_parts`, `metrics_parts`, `embeddings_parts` and `runs_parts` hold every row of each table
(empty, with the table's columns, when it has no parts). Used by `mt evaluate`'s summary tables and
`mt report`; tests/test_evaluation_summary.py checks it against the pandas path.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import pandas as pd

from mtcore.eval.evaluation import GROUPS, SUMMARY_METRICS, config_label

MEMORY_LIMIT = "256MB"
"""DuckDB's memory limit when reading the catalogs."""
METRICS = SUMMARY_METRICS
"""The metrics whose NaN are read as NULL."""


def query_results(out: str | os.PathLike, metrics_version: str, run_id: str | None, fn: Callable[[Any], Any],
                  memory_limit: str = MEMORY_LIMIT) -> Any:
    """`fn(con)` with `results` built (see the module). A compaction may replace part files while they are
    read: the whole query is then done again on the new listing."""
    import duckdb

    for attempt in range(5):
        with tempfile.TemporaryDirectory(prefix="mt-results-") as spill:
            con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": spill})
            try:
                # DuckDB 2.0 folds isnan() to false from Parquet statistics, which leave NaN out of min/max
                # (tests/test_evaluation_summary.py saw a NaN metric counted): no folding from statistics
                con.execute("SET disabled_optimizers = 'statistics_propagation'")
                con.execute("SET enable_progress_bar = false")
                con.execute("SET preserve_insertion_order = false")  # lets large results spill to disk
                _views(con, str(out))
                _results(con, metrics_version, run_id)
                return fn(con)
            except (duckdb.IOException, duckdb.InvalidInputException, duckdb.HTTPException, OSError) as exc:
                vanished = "No such file" in str(exc) or "not found" in str(exc).lower()
                if not vanished or attempt == 4:
                    raise
            finally:
                con.close()
    raise AssertionError("unreachable")


def summarise_catalog(out: str | os.PathLike, metrics_version: str, group_by: str = "reference", worst: int = 5,
                      run_id: str | None = None, memory_limit: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`summarise(load_results(out, metrics_version, run_id), group_by, worst)`, computed by DuckDB over the
    catalogs' part files (this module): its memory stays near `memory_limit` whatever the number
    of transfers (benchmarks/bench_evaluate.py), and only the groups and the worst items come back to
    pandas. Same tables as `summarise` (tests/test_evaluation_summary.py)."""
    column = GROUPS[group_by]

    def tables(con) -> tuple[pd.DataFrame, pd.DataFrame]:
        con.execute("CREATE TEMP VIEW measured AS SELECT * FROM results WHERE status = 'ok' AND motion_fidelity IS NOT NULL")
        aggregates = ", ".join(f"avg({m}) AS {m}_mean, stddev_pop({m}) AS {m}_std" for m in SUMMARY_METRICS)
        table = con.execute(f"""SELECT {column} AS "{group_by}", count(*) AS count, {aggregates} FROM measured
                                WHERE {column} IS NOT NULL GROUP BY {column} ORDER BY {column}""").df()
        table = table.astype({"count": "int64"}).astype({c: "float64" for c in table.columns if c.endswith(("_mean", "_std"))})
        worst_items = con.execute("""SELECT reference_id, target_id, seed, model_label, config_label, motion_fidelity,
                                     psnr_first, video_path FROM measured ORDER BY motion_fidelity ASC LIMIT $n""",
                                  {"n": worst}).df()
        return table, worst_items

    return query_results(out, metrics_version, run_id, tables, memory_limit or MEMORY_LIMIT)


def _views(con, out: str) -> None:
    from mtcore.data.catalog import SCHEMAS, part_files
    from mtcore.io.storage import storage

    store = storage(out)
    if store.remote:
        con.register_filesystem(store.fs)
    for table, schema in SCHEMAS.items():
        files = part_files(out, table)
        if files:
            con.read_parquet([str(f) for f in files], union_by_name=True).create_view(f"{table}_parts")
        else:
            con.register(f"{table}_parts", schema.empty_table())


def _results(con, metrics_version: str, run_id: str | None) -> None:
    clean = ", ".join(f"CASE WHEN isnan(m.{c}) THEN NULL ELSE m.{c} END AS {c}" for c in METRICS)
    run = "AND run_id = $run" if run_id is not None else ""
    # the latest row per key: a window over the few keys recorded more than once, the rest as they are
    # (a window over every row would hold them all in memory; a count per key spills to disk)
    con.execute(f"""
        CREATE TEMP TABLE unlabelled AS
        WITH twice AS (SELECT transfer_key FROM transfers_parts WHERE true {run} GROUP BY 1 HAVING count(*) > 1),
        t AS (
            SELECT * FROM transfers_parts WHERE transfer_key NOT IN (SELECT transfer_key FROM twice) {run}
            UNION ALL BY NAME
            SELECT * FROM transfers_parts WHERE transfer_key IN (SELECT transfer_key FROM twice) {run}
            QUALIFY row_number() OVER (PARTITION BY transfer_key ORDER BY (status = 'ok') DESC, created_at DESC) = 1),
        mtwice AS (SELECT transfer_key FROM metrics_parts WHERE metrics_version = $version GROUP BY 1 HAVING count(*) > 1),
        m AS (
            SELECT * EXCLUDE (created_at, run_id, worker, seconds) FROM metrics_parts
            WHERE metrics_version = $version AND transfer_key NOT IN (SELECT transfer_key FROM mtwice)
            UNION ALL BY NAME
            SELECT * EXCLUDE (created_at, run_id, worker, seconds) FROM metrics_parts
            WHERE metrics_version = $version AND transfer_key IN (SELECT transfer_key FROM mtwice)
            QUALIFY row_number() OVER (PARTITION BY transfer_key ORDER BY created_at DESC) = 1)
        SELECT t.*, coalesce(t.model, t.model_id) AS model_label,
               m.* EXCLUDE (transfer_key, {', '.join(METRICS)}), {clean}
        FROM t LEFT JOIN m AS m USING (transfer_key)
    """, {"version": metrics_version, **({"run": run_id} if run_id is not None else {})})
    # config labels: one per distinct pair of configs (a handful), not per row
    pairs = con.execute("SELECT DISTINCT inversion_config, transfer_config FROM unlabelled").fetchall()
    labels = pd.DataFrame([(i, t, config_label(i, t)) for i, t in pairs],
                          columns=["inversion_config", "transfer_config", "config_label"])
    con.register("labels", labels)
    con.execute("""CREATE TEMP TABLE results AS SELECT u.*, labels.config_label FROM unlabelled AS u
                   LEFT JOIN labels ON u.inversion_config IS NOT DISTINCT FROM labels.inversion_config
                   AND u.transfer_config IS NOT DISTINCT FROM labels.transfer_config""")
    con.execute("DROP TABLE unlabelled")
