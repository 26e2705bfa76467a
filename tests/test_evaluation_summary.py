"""`mt evaluate`'s summary tables computed by DuckDB over the catalogs (mtcore.eval.results_sql.summarise_catalog)
equal pandas' over the whole table (`summarise(load_results(...))`), on a catalog with what real ones hold:
a key re-run after a failure, a failure after an ok row, a key that only failed, a metrics row measured
again, another metrics version, a NaN metric, a transfer without metrics, two runs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import make_run


@pytest.fixture(scope="module")
def messy_out(tmp_path_factory):
    from mtcore import METRICS_VERSION
    from mtcore.data.catalog import append_rows, read_table

    _, out = make_run(tmp_path_factory.mktemp("summary"), 4, 5)
    transfers, metrics = read_table(out, "transfers"), read_table(out, "metrics")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)

    def again(row: pd.Series, **changes) -> dict:
        return {**{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.to_dict().items()},
                "created_at": later, "run_id": "second", **changes}

    append_rows(out, "transfers", [
        again(transfers.iloc[0], status="failed", error="out of memory"),  # failed after its ok row: the ok row stands
        again(transfers.iloc[1], status="failed", error="bad target", transfer_key="f" * 64),  # a key that only failed
        again(transfers.iloc[2]),  # recorded again by the second run (ok)
        again(transfers.iloc[7], transfer_key="e" * 64),  # ok, never measured
    ])
    append_rows(out, "metrics", [
        again(metrics.iloc[3], motion_fidelity=-0.9),  # measured again: the latest stands
        again(metrics.iloc[4], metrics_version="older", motion_fidelity=-5.0),  # another version: not counted
        again(metrics.iloc[5], motion_fidelity=float("nan")),  # NaN: as missing
    ])
    return out, METRICS_VERSION


@pytest.mark.parametrize("group_by", ["reference", "target", "model", "config"])
@pytest.mark.parametrize("run_id", [None, "second"])
def test_the_duckdb_summary_equals_pandas_over_the_whole_table(messy_out, group_by, run_id):
    from mtcore.eval.evaluation import load_results, summarise
    from mtcore.eval.results_sql import summarise_catalog

    out, version = messy_out
    expected_table, expected_worst = summarise(load_results(out, version, run_id), group_by, 4)
    table, worst = summarise_catalog(out, version, group_by, 4, run_id=run_id)
    assert len(expected_table) > 0
    numbers = [c for c in expected_table.columns if c.endswith(("_mean", "_std"))]  # all-missing: None there, NaN here
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected_table.astype({c: float for c in numbers}).reset_index(drop=True),
                                  check_dtype=False, rtol=1e-9)
    pd.testing.assert_frame_equal(worst.reset_index(drop=True), expected_worst.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-9)
    if run_id is None:
        assert -0.9 in set(worst.motion_fidelity.round(6))  # the metrics row measured again stands
        assert table["count"].sum() == 20 - 1  # 20 ok transfers, one of them with a NaN motion fidelity


def test_the_summary_memory_limit_is_a_real_limit(messy_out):
    from mtcore.eval.results_sql import summarise_catalog

    out, version = messy_out
    table, _ = summarise_catalog(out, version, "reference", memory_limit="64MB")
    assert table["count"].sum() == 19


def _data_file(path) -> list[dict]:
    """The report's data/items.js as records (what the page's mtItems decodes)."""
    import json

    text = path.read_text()
    columns = json.loads(text[text.index("(") + 1:text.rindex(")")])
    fields = columns["fields"]
    return [{name: ((None if f["codes"][i] < 0 else f["dict"][f["codes"][i]]) if "dict" in f else f["values"][i])
             for name, f in fields.items()} for i in range(columns["n"])]


@pytest.mark.parametrize("run_id", [None, "second"])
def test_the_report_streams_every_transfer_as_pandas_reads_it(messy_out, run_id):
    """mt report reads the catalogs through DuckDB a batch at a time (mtcore.eval.report); its data file holds
    every transfer's latest row, metrics and labels as the pandas path reads them, highest motion fidelity first."""
    import math

    from mtcore.eval import report
    from mtcore.eval.evaluation import load_results

    out, version = messy_out
    old_batch = report.ROWS_PER_BATCH
    report.ROWS_PER_BATCH = 3  # several batches even on a small catalog
    try:
        page = report.write_report(out, run_id=run_id, page_size=2)
    finally:
        report.ROWS_PER_BATCH = old_batch
    rows = _data_file(out / "report" / "data" / "items.js")
    expected = load_results(out, version, run_id).set_index("transfer_key")
    assert sorted(r["transfer_key"] for r in rows) == sorted(expected.index)
    for row in rows:
        want = expected.loc[row["transfer_key"]]
        for field in ("reference_id", "target_id", "seed", "model_label", "config_label", "status", "error",
                      "motion_fidelity", "psnr_first"):
            value = want[field]
            value = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
            assert row[field] == (round(value, 5) if isinstance(value, float) else value), (field, row, want)
    fidelity = [r["motion_fidelity"] for r in rows if r["motion_fidelity"] is not None]
    assert fidelity == sorted(fidelity, reverse=True) and rows[-1]["motion_fidelity"] is None  # unmeasured last
    text = page.read_text()
    assert '"failures_total": ' + str(int((expected.status == "failed").sum())) in text
