"""Planning metrics from the catalogs alone (`mt evaluate`): finished transfers lacking a metrics row.

No manifest needed: the transfers rows name their model, reference and target paths and configs.
Rows written before the catalogs recorded those (no `model`, `reference_path` or `target_path`)
cannot be measured from the catalog; they are counted and reported, not guessed.

At 10^5 and 10^6 transfers the catalog is read as Arrow columns (repeating strings dictionary-encoded),
filtered in Arrow (latest ok row per key, no metrics row of the version, video in the store), and the
rows left become TransferJobs a chunk at a time as the measure stage serves them (`RowJobs.chunks`), as
`mt run`'s own stages do: never a Python object per transfer of the whole catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mtcore.data.catalog import metric_key_array, read_arrow
from mtcore.data.samples import latest
from mtcore.method.config import InversionConfig, TransferConfig, config_from_dict
from tasks.items import InversionJob, PlannedModel, TransferJob
from tasks.plan import Plan, isin, stored_mask

COLUMNS = ["transfer_key", "created_at", "model", "model_id", "embedding_key", "reference_id", "reference_path",
           "inversion_config", "target_id", "target_path", "target_sha256", "seed", "video_path", "transfer_config"]
REPEATING = ("model", "model_id", "embedding_key", "reference_id", "reference_path", "inversion_config", "target_id",
             "target_path", "target_sha256", "transfer_config")


@dataclass
class MetricsPlan:
    """Per model, the cached transfers to measure."""

    plans: list[Plan] = field(default_factory=list)
    """One plan per model, only its metrics_todo filled (a RowJobs)."""
    unmeasurable: int = 0
    """Finished transfers whose rows lack what measuring needs (made before those columns existed)."""
    missing_files: int = 0
    """Finished transfers whose video is no longer in the store."""


@dataclass
class RowJobs:
    """Transfers to measure, as their catalog rows (Arrow); TransferJobs are made a chunk at a time."""

    rows: pa.Table

    def __len__(self) -> int:
        return self.rows.num_rows

    def chunks(self, size: int):
        """Lists of at most `size` TransferJobs, in row order."""
        for batch in self.rows.to_batches(max_chunksize=size):
            yield [_job(row) for row in batch.to_pylist()]

    def __iter__(self):
        for chunk in self.chunks(4096):
            yield from chunk


def plan_missing_metrics(out: str, metrics_version: str) -> MetricsPlan:
    """Every finished transfer in OUT's catalog without a metrics row of `metrics_version`."""
    out = str(out)
    rows = latest(read_arrow(out, "transfers", columns=COLUMNS, filter=ds.field("status") == "ok", dictionary=REPEATING),
                  "transfer_key")
    rows = rows.filter(pa.array(~isin(rows["transfer_key"].cast(pa.binary()).combine_chunks(),
                                      metric_key_array(out, metrics_version)), pa.bool_()))
    here = stored_mask(out, "transfers", rows["transfer_key"].cast(pa.binary()).combine_chunks())
    result = MetricsPlan(missing_files=int((~here).sum()))
    rows = rows.filter(pa.array(here, pa.bool_()))
    measurable = pc.and_(pc.and_(pc.is_valid(rows["model"]), pc.is_valid(rows["reference_path"])),
                         pc.is_valid(rows["target_path"]))
    result.unmeasurable = rows.num_rows - pc.sum(measurable.cast(pa.int64())).as_py() if rows.num_rows else 0
    rows = rows.filter(measurable)
    if not rows.num_rows:
        return result
    models = pc.binary_join_element_wise(rows["model"].cast(pa.string()), rows["model_id"].cast(pa.string()), "\0")
    for pair in pc.unique(models).to_pylist():
        model, model_id = pair.split("\0", 1)
        mine = rows.filter(pc.equal(models, pair))
        result.plans.append(Plan("", "", [PlannedModel(model, None, model_id)], metrics=True,
                                 metrics_todo=RowJobs(mine)))
    return result


def _job(row: dict) -> TransferJob:
    model = PlannedModel(row["model"], None, row["model_id"])
    embedding = InversionJob(row["embedding_key"], row["reference_id"], row["reference_path"], "", "",
                             _config(InversionConfig, row["inversion_config"]), model)
    return TransferJob(row["transfer_key"], embedding, row["target_id"], row["target_path"], row["target_sha256"],
                       int(row["seed"]), row["video_path"], _config(TransferConfig, row["transfer_config"]))


@lru_cache(maxsize=256)
def _config(cls: type, text: str | None):
    return config_from_dict(cls, json.loads(text), cls.__name__) if isinstance(text, str) else cls()
