"""What a bulk run reports: per-stage results and the typed run summary (`mt run --json` prints it).

Light (no Ray, no Prefect, no torch) so tests and benchmarks read summaries without the pipeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from mtcore.errors import redact


@dataclass
class StageResult:
    """What one stage (invert or transfer) did."""

    computed: int = 0
    """Items done successfully in this run."""
    failed: int = 0
    """Rows that failed in this run."""
    ok_keys: set[str] = field(default_factory=set)
    """Keys available after the stage: computed now or cached before (kept for embeddings only:
    tasks.sink.KEYED)."""
    failed_keys: dict[str, str] = field(default_factory=dict)
    """Key -> one-line error, for items that failed in this run (embeddings only)."""
    errors: list[str] = field(default_factory=list)
    """The errors of the first failed rows (tasks.sink.ERRORS_KEPT), in the order they happened."""
    measured: int = 0
    """Metrics rows written (transfers measured) in this run."""
    elsewhere: int = 0
    """Items this run did not compute but found done: by another run sharing OUT while this one waited,
    or in the store without their row (left by a killed run)."""

    def merge(self, other: "StageResult") -> "StageResult":
        """The two results together (one stage run on several models)."""
        return StageResult(self.computed + other.computed, self.failed + other.failed, self.ok_keys | other.ok_keys,
                           {**self.failed_keys, **other.failed_keys}, self.errors + other.errors,
                           self.measured + other.measured, self.elsewhere + other.elsewhere)


@dataclass(frozen=True)
class WorkerStats:
    """One model worker of the run, as it reported itself at the end."""

    worker: str
    """"host/node-<ray node id[:8]>/pid-<pid>"."""
    model_loads: int
    """Times this worker process loaded the model (1 when the model stayed resident)."""
    items: int
    """Inversions plus transfers it served."""
    device: str
    """torch device it ran on."""
    model_id: str
    """Identity of the model it holds."""
    joined_s: float = 0.0
    """Seconds after its pool began serving that it joined (0 for the workers the pool started with)."""
    left_s: float | None = None
    """Seconds after its pool began serving that it left (its process or node died) and did not come back;
    None = it served to the end."""


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one bulk run; its first fields are the run's row in catalog/runs."""

    run_id: str
    """The Prefect flow-run id."""
    manifest_path: str
    manifest_sha256: str
    started_at: dt.datetime
    finished_at: dt.datetime
    inversions_computed: int
    inversions_cached: int
    """Found in the store: at planning, or made meanwhile by another run sharing OUT."""
    transfers_computed: int
    transfers_cached: int
    failed: int
    """Inversions plus transfers that failed in this run."""
    metrics_computed: int
    """Transfers measured in this run (new ones, and cached ones that lacked this metrics version)."""
    wall_seconds: float
    """Wall time of the flow body."""
    out: str
    """The output root, absolute."""
    workers: list[WorkerStats]
    """Model workers the run started (empty when everything was cached: Ray never started)."""
    errors: list[str]
    """The first 20 errors of failed rows."""

    @property
    def catalogs(self) -> str:
        from mtcore.io.storage import join

        return join(self.out, "catalog")

    def catalog_row(self) -> dict[str, Any]:
        """The run's row for catalog/runs (mtcore.data.catalog.RUNS)."""
        names = ("run_id", "manifest_path", "manifest_sha256", "started_at", "finished_at", "inversions_computed",
                 "inversions_cached", "transfers_computed", "transfers_cached", "failed", "metrics_computed")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def of(cls, run_id: str, plan, inversions: StageResult, transfers: StageResult, measured: StageResult,
           started_at: dt.datetime, wall_seconds: float, out: str, workers: list[WorkerStats]) -> "RunSummary":
        """The summary of a run of `plan` (tasks.plan.Plan) whose stages did what the results say."""
        return cls(
            run_id=run_id, manifest_path=redact(plan.manifest_path), manifest_sha256=plan.manifest_sha256,
            started_at=started_at, finished_at=dt.datetime.now(dt.timezone.utc),
            inversions_computed=inversions.computed, inversions_cached=len(plan.inversions_cached) + inversions.elsewhere,
            transfers_computed=transfers.computed, transfers_cached=len(plan.transfers_cached) + transfers.elsewhere,
            failed=inversions.failed + transfers.failed, metrics_computed=transfers.measured + measured.measured,
            wall_seconds=round(wall_seconds, 2), out=out, workers=workers,
            errors=(inversions.errors + transfers.errors)[:20],
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: timestamps as ISO 8601 strings, workers as dicts."""
        data = dataclasses.asdict(self)
        data["started_at"], data["finished_at"] = self.started_at.isoformat(), self.finished_at.isoformat()
        data["catalogs"] = self.catalogs
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        """Inverse of `to_json` (extra keys such as "catalogs" are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["started_at"] = dt.datetime.fromisoformat(data["started_at"])
        values["finished_at"] = dt.datetime.fromisoformat(data["finished_at"])
        values["workers"] = [WorkerStats(**w) for w in data["workers"]]
        return cls(**values)
