"""A run whose plan finds nothing to do: recorded in a second, without Prefect's flow engine.

A re-run of a manifest whose every key is in the store (the nightly re-run of a dataset that has not
changed) used to pay for Prefect's engine and the pipeline's imports (Prefect, Ray, the stages: 1.4 s
of imports, then the engine's task runs) to learn that there was nothing to do. `mt run` now plans
first, in the plain process (tasks.plan imports neither Prefect nor Ray). When the plan has nothing to
compute, nothing to record (no failed input, no artifact in the store without its row) and no retry
condition to evaluate, the run is recorded as it would have ended:

- its row in catalog/runs, with every count cached;
- its Prefect record: a flow run of the same flow (`bulk-run`) in state Completed, with the run's
  parameters, tags `motion-transfer` and `nothing-to-do`, and the plan's counts as the state's message,
  written through Prefect's REST API (`POST /flows/`, `POST /flow_runs/`: the API every Prefect client
  uses) on the configured server or the run's temporary one. The flow run's id is the run's id, as
  for every run.

Anything else takes the full flow. docs/performance.md gives the figures (cached re-run against first
run of the demo).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.results import RunSummary

FLOW_NAME = "bulk-run"
"""The flow every `mt run` records (flows.bulk's flow takes its name from here: this module must not
import the flow)."""


def nothing_to_do(manifest, out: str, part: str | None, api_url) -> RunSummary | None:
    """The run's summary if its plan finds nothing to do (then recorded here: see the module), else None.
    `manifest`: the checked Manifest; `api_url`: a callable that returns the Prefect API's URL (it waits
    for the temporary server only when there is a record to write)."""
    from pathlib import Path

    from mtcore import METRICS_VERSION
    from mtcore.data.catalog import append_rows
    from mtcore.errors import redact
    from mtcore.io.fileio import remove_stale_temporaries
    from mtcore.io.storage import is_url
    from tasks.plan import parse_part, plan_run
    from tasks.results import RunSummary, StageResult

    t0, started = time.perf_counter(), dt.datetime.now(dt.timezone.utc)
    plan = plan_run(manifest, out, METRICS_VERSION)
    if part:
        plan = plan.part(*parse_part(part))
    if (plan.inversions_todo or len(plan.transfers_todo) or len(plan.metrics_todo) or plan.failed_inversions
            or plan.failed_transfers or plan.retry is not None):
        return None
    if not is_url(out):  # what a killed run left half-written, as the plan stage does
        for folder in ("store", "catalog"):
            remove_stale_temporaries(Path(out) / folder)
    message = (f"nothing to do: {len(plan.inversions_cached)} inversions and {len(plan.transfers_cached)} transfers "
               "cached")
    run_id = record_flow_run(api_url(), FLOW_NAME, {"manifest": redact(str(manifest.path)), "out": redact(out),
                                                    **({"part": part} if part else {})}, message)
    summary = RunSummary.of(run_id, plan, StageResult(), StageResult(), StageResult(), started,
                            time.perf_counter() - t0, out, [])
    append_rows(out, "runs", [summary.catalog_row()])
    return summary


def record_flow_run(api_url: str, flow_name: str, parameters: dict, message: str) -> str:
    """A Completed flow run of `flow_name` on the Prefect server at `api_url` (its REST API); its id."""
    flow = _post(api_url, "/flows/", {"name": flow_name})
    name = f"nothing-to-do-{uuid.uuid4().hex[:8]}"
    run = _post(api_url, "/flow_runs/", {
        "flow_id": flow["id"], "name": name, "parameters": parameters, "tags": ["motion-transfer", "nothing-to-do"],
        "state": {"type": "COMPLETED", "name": "Completed", "message": message}})
    return run["id"]


RETRY_CODES = {408, 429, 502, 503}
"""Answers a busy server gives (Prefect's SQLite server answers 503 while its database is locked); Prefect's
own client retries these, so this does too."""


def _post(api_url: str, path: str, body: dict) -> dict:
    """POST to Prefect's REST API, retried as Prefect's client retries: on a busy answer (RETRY_CODES) or a refused
    connection, up to PREFECT_CLIENT_MAX_RETRIES times (default 5), after Retry-After or 1, 2, 4, 8, 16 s."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get("PREFECT_API_KEY"):  # Prefect Cloud
        headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
    retries = int(os.environ.get("PREFECT_CLIENT_MAX_RETRIES", "5"))
    for attempt in range(retries + 1):
        request = urllib.request.Request(api_url.rstrip("/") + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_CODES or attempt == retries:
                raise
            wait = exc.headers.get("Retry-After") if exc.headers else None
        except urllib.error.URLError:
            if attempt == retries:
                raise
            wait = None
        time.sleep(float(wait) if wait and wait.replace(".", "", 1).isdigit() else 2.0 ** attempt)
    raise AssertionError("unreachable")


__all__ = ["nothing_to_do", "record_flow_run"]
