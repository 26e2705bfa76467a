"""A run's results as one table: transfers joined with their metrics, summarised by group.

Reads the catalogs only: `load_results` (pandas over Parquet, every row in memory) for `mt report`'s
page; `summarise_catalog` (DuckDB over the catalogs' Arrow datasets, streamed with a memory limit) for
`mt evaluate`'s summary tables, so that they take bounded memory at any number of transfers. A transfer key may have several rows (a failure, then a success on a
re-run): the latest row per key stands, an ok row before a later failure included (the artifact
was written before its ok row). Metrics are those of the requested version, latest row per key.
"""

from __future__ import annotations

import json
import os
from typing import Literal

import numpy as np
import pandas as pd

from mtcore.data.catalog import read_table
from mtcore.method.config import InversionConfig, TransferConfig, config_to_dict

SUMMARY_METRICS = ("motion_fidelity", "psnr_first", "ssim_first", "clip_first", "clip_avg", "warp_error", "frame_change")
"""Metrics summarised per group (mean, std, count)."""
GROUPS = {"reference": "reference_id", "target": "target_id", "model": "model_label", "config": "config_label"}

_DEFAULTS = {"inv": config_to_dict(InversionConfig()), "tr": config_to_dict(TransferConfig())}


def config_label(inversion_json: str | None, transfer_json: str | None) -> str:
    """A short human label of a config pair: the fields that differ from the defaults.

    e.g. "inv steps=150, tokens_per_frame=2 | tr steps=12"; "defaults" when nothing differs.
    """
    parts = []
    for tag, text in (("inv", inversion_json), ("tr", transfer_json)):
        if not text:
            continue
        changed = {k: v for k, v in json.loads(text).items() if _DEFAULTS[tag].get(k) != v}
        if changed:
            parts.append(f"{tag} " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return " | ".join(parts) or "defaults"


def latest_rows(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The latest row per key; an ok row wins over later failed ones (its artifact exists)."""
    if df.empty:
        return df
    df = df.assign(_ok=df.status == "ok") if "status" in df else df.assign(_ok=True)
    df = df.sort_values(["_ok", "created_at"]).drop_duplicates(key, keep="last")
    return df.drop(columns="_ok")


def load_results(out: str | os.PathLike, metrics_version: str, run_id: str | None = None) -> pd.DataFrame:
    """One row per transfer key: its latest transfers row, joined with its metrics of `metrics_version`.

    With `run_id`, only transfers whose row was made in that run. Adds `model_label` (the model as
    named, else its identity) and `config_label` (`config_label`).
    """
    transfers = read_table(out, "transfers")
    if run_id is not None:
        transfers = transfers[transfers.run_id == run_id]
    transfers = latest_rows(transfers, "transfer_key")
    metrics = read_table(out, "metrics")
    metrics = metrics[metrics.metrics_version == metrics_version].sort_values("created_at")
    metrics = metrics.drop_duplicates("transfer_key", keep="last")
    keep = ["transfer_key", *[c for c in metrics.columns if c not in transfers.columns]]
    df = transfers.merge(metrics[keep], on="transfer_key", how="left")
    df["model_label"] = df["model"].where(df["model"].notna(), df["model_id"])
    df["config_label"] = [config_label(i, t) for i, t in zip(df["inversion_config"], df["transfer_config"])]
    return df.reset_index(drop=True)


def summarise(df: pd.DataFrame, group_by: Literal["reference", "target", "model", "config"] = "reference",
              worst: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-group table: count and mean / std of each metric, measured items only; the `worst`
    measured items by motion fidelity)."""
    column = GROUPS[group_by]
    measured = df[(df.status == "ok") & df.motion_fidelity.notna()]
    rows = []
    for name, group in measured.groupby(column, sort=True):
        row = {group_by: name, "count": len(group)}
        for metric in SUMMARY_METRICS:
            values = group[metric].dropna().astype(float)
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            row[f"{metric}_std"] = float(values.std(ddof=0)) if len(values) else None
        rows.append(row)
    table = pd.DataFrame(rows, columns=[group_by, "count"] + [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")])
    columns = ["reference_id", "target_id", "seed", "model_label", "config_label", "motion_fidelity", "psnr_first",
               "video_path"]
    worst_items = measured.nsmallest(worst, "motion_fidelity")[columns]
    return table, worst_items


def to_records(df: pd.DataFrame) -> list[dict]:
    """JSON-able records: NaN and missing values become None, numpy scalars plain Python."""
    out = []
    for record in df.to_dict(orient="records"):
        out.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        (v.item() if hasattr(v, "item") else (v.isoformat() if hasattr(v, "isoformat") else v)))
                    for k, v in record.items()})
    return out
