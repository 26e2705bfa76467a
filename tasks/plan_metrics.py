"""Planning metrics from the catalogs alone (`mt evaluate`): finished transfers lacking a metrics row.

No manifest needed: the transfers rows name their model, reference and target paths and configs.
Rows written before the catalogs recorded those (no `model`, `reference_path` or `target_path`)
cannot be measured from the catalog; they are counted and reported, not guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mtcore.data.catalog import metric_keys, read_table
from mtcore.method.config import InversionConfig, TransferConfig, config_from_dict
from mtcore.eval.evaluation import latest_rows
from tasks.items import InversionJob, PlannedModel, TransferJob
from tasks.plan import Plan, stored


@dataclass
class MetricsPlan:
    """Per model, the cached transfers to measure."""

    plans: list[Plan] = field(default_factory=list)
    """One plan per model, only its metrics_todo filled."""
    unmeasurable: int = 0
    """Finished transfers whose rows lack what measuring needs (made before those columns existed)."""
    missing_files: int = 0
    """Finished transfers whose video is no longer in the store."""


def plan_missing_metrics(out: str, metrics_version: str) -> MetricsPlan:
    """Every finished transfer in OUT's catalog without a metrics row of `metrics_version`."""
    out = str(out)
    transfers = read_table(out, "transfers")
    transfers = latest_rows(transfers[transfers.status == "ok"], "transfer_key")
    done = metric_keys(out, metrics_version)
    result = MetricsPlan()
    by_model: dict[PlannedModel, list[TransferJob]] = {}
    here = stored(out, "transfers", set(transfers.transfer_key) - done)
    for row in transfers.itertuples(index=False):
        if row.transfer_key in done:
            continue
        if row.transfer_key not in here:
            result.missing_files += 1
            continue
        if not (isinstance(row.model, str) and isinstance(row.reference_path, str) and isinstance(row.target_path, str)):
            result.unmeasurable += 1
            continue
        model = PlannedModel(row.model, None, row.model_id)
        inversion = _config(InversionConfig, row.inversion_config)
        embedding = InversionJob(row.embedding_key, row.reference_id, row.reference_path, "", "", inversion, model)
        job = TransferJob(row.transfer_key, embedding, row.target_id, row.target_path, row.target_sha256,
                          int(row.seed), row.video_path, _config(TransferConfig, row.transfer_config))
        by_model.setdefault(model, []).append(job)
    for model, jobs in by_model.items():
        result.plans.append(Plan("", "", [model], metrics=True, metrics_todo=jobs))
    return result


def _config(cls: type, text: str | None):
    return config_from_dict(cls, json.loads(text), cls.__name__) if isinstance(text, str) else cls()
