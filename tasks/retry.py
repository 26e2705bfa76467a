"""Seeds until it passes: with `retry: {where: EXPR, max_seeds: N}`, a run samples further seeds only for
the pairs none of whose outputs so far passes EXPR.

Attempt k of a pair uses seed S + k (S: the manifest's one seed), a fixed sequence, so every attempt is
an ordinary transfer with its own key: it stays in the catalogs, and a re-run finds each attempt cached
and decides the same way from the same metrics. A pair whose first seed passes costs one video.
A pair is retried only when it has a measured output that fails (a pair whose reference failed has none).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore import METRICS_VERSION
from mtcore.data.manifest import Manifest, load_manifest
from mtcore.data.samples import sample_table
from mtcore.data.select import filter_rows
from mtcore.method.config import config_json
from tasks.claims import Claims
from tasks.items import PlannedModel
from tasks.measure import metrics_stage
from tasks.plan import Plan, plan_run, planned_transfers
from tasks.pool import WorkerPool
from tasks.results import StageResult
from tasks.transfer import transfer_stage

Pair = tuple[str, str, str]
"""(embedding key, transfer config JSON, target id): one pair under one model and pair of configs."""


def _pairs(table) -> set[Pair]:
    return set(zip(table.column("embedding_key").to_pylist(), table.column("transfer_config").to_pylist(),
                   table.column("target_id").to_pylist()))


def every_attempt(manifest: Manifest, out: str, model: PlannedModel) -> Plan:
    """The plan of every seed a pair may use (S .. S + max_seeds - 1) on `model`, made once: attempt k's
    transfers are not touched by attempts before it (other seeds, other keys)."""
    seeds = manifest.retry.seeds(manifest.seeds[0])
    return plan_run(replace(manifest, seeds=seeds), out, METRICS_VERSION).for_model(model)


def retry_plan(manifest: Manifest, out: str, full: Plan, attempt: int) -> tuple[Plan, int]:
    """The plan of attempt `attempt` (seed S + attempt): the transfers of the pairs whose attempts
    0 .. attempt-1 have measured outputs and none passes `retry.where`; and how many pairs that is.
    `full`: `every_attempt`'s plan."""
    seed = manifest.seeds[0] + attempt
    planned = planned_transfers(full)
    rows = sample_table(manifest, out, planned.filter(pc.less(planned.column("seed"), seed)), require_metrics=False)
    rows = rows.filter(pc.is_valid(rows.column("motion_fidelity")))  # measured outputs only
    failing = _pairs(rows) - _pairs(filter_rows(rows, manifest.retry.where, "retry.where"))

    def keep(transfers):
        masks = []
        for part in transfers.parts:
            config, ids = config_json(part.config), [t.id for t in part.targets]
            masks.append((part.seed == seed) & np.array([(part.embedding.key, config, ids[t]) in failing
                                                         for t in part.target], bool))
        return transfers.split(np.concatenate(masks) if masks else np.zeros(0, bool))[0]

    plan = replace(full, inversions_todo=[], failed_inversions=[], failed_transfers=[],
                   transfers_todo=keep(full.transfers_todo), transfers_cached=keep(full.transfers_cached),
                   metrics_todo=keep(full.metrics_todo))
    return plan, len(failing)


@task(name="retry", cache_policy=NONE)
def retry_stage(pool: WorkerPool, plan: Plan, model: PlannedModel, out: str, batch_size: int, run_id: str,
                claims: Claims | None = None) -> tuple[StageResult, StageResult]:
    """Attempts 1 .. max_seeds-1 of the pairs still failing, on the model's transfer pool; (transfers, metrics)."""
    log = get_run_logger()
    manifest = load_manifest(plan.manifest_path)
    made, measured = StageResult(), StageResult()
    full = every_attempt(manifest, out, model)
    for attempt in range(1, manifest.retry.max_seeds):
        more, pairs = retry_plan(manifest, out, full, attempt)
        if not pairs:
            break
        seed = manifest.seeds[0] + attempt
        log.info("retry: %d pair(s) have no output passing %r; seed %d: %d to make, %d made before",
                 pairs, manifest.retry.where, seed, len(more.transfers_todo), len(more.transfers_cached))
        embeddings = StageResult(ok_keys={job.key for job in more.inversions_cached})
        made = made.merge(transfer_stage.fn(pool, more, out, embeddings, batch_size, run_id, claims))
        measured = measured.merge(metrics_stage.fn(pool, more, out, run_id, claims))
    return made, measured


__all__ = ["every_attempt", "retry_plan", "retry_stage"]
