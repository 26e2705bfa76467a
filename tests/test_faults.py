"""Faults a long run on a shared cluster meets: a worker killed mid-item, an item that kills its
worker every time, a node that leaves, a driver killed mid-run, two runs on one output folder at
once, and an output folder that cannot be written. Real processes, real signals, real Ray."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mtcore.data.catalog import read_table
from tests.conftest import cli_env, write_manifest
from tests.test_cli_core import MT


def mt_run(manifest: Path, out: Path, home: Path, *extra, wait: bool = True, api: str | None = None):
    """`mt run` in a subprocess: on Prefect's temporary server, as a user's first run, or on `api`."""
    env = cli_env(home, api)
    cmd = [MT, "run", str(manifest), "--out", str(out), "--json", *map(str, extra)]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def kill_session(proc: subprocess.Popen) -> None:
    """Kill a run started with start_new_session and every process it left (Ray, Prefect's server)."""
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == proc.pid:
                p.kill()
        except (ProcessLookupError, psutil.Error, PermissionError):
            pass


def finish_all(runs: list[subprocess.Popen]) -> list[dict]:
    """The --json summaries of `mt run`s started at once, each of which must succeed; whatever they leave
    running is killed."""
    try:
        outputs = [p.communicate(timeout=900) for p in runs]
    finally:
        for p in runs:
            kill_session(p)
    for p, (_, stderr) in zip(runs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    return [summary_of(stdout) for stdout, _ in outputs]


def worker_processes(method: str = "run") -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if cmdline.startswith(f"ray::ModelWorker.{method}"):
            found.append(p)
    return found


def assert_each_key_ok_once(out: Path, embeddings: int, transfers: int) -> None:
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    ok_emb, ok_tr = emb[emb.status == "ok"], tr[tr.status == "ok"]
    assert len(ok_emb) == embeddings and ok_emb.embedding_key.is_unique
    assert len(ok_tr) == transfers and ok_tr.transfer_key.is_unique
    for rel in list(ok_emb.path) + list(ok_tr.video_path):
        assert (out / rel).is_file()
    assert not list((out / "store").rglob(".*.tmp-*")), "a partial file was left in the store"


@pytest.fixture
def two_by_two_manifest(media, tmp_path, tiny_model_dir):
    return write_manifest(tmp_path, {"right": media / "right.mp4", "left": media / "left.mp4"},
                          {"cat": media / "cat.png", "dog": media / "dog.png"}, model=str(tiny_model_dir),
                          inversion={"steps": 120, "tokens_per_frame": 2})


def test_a_worker_killed_mid_inversion_is_restarted_and_its_item_retried(two_by_two_manifest, tmp_path):
    """Also: while the run is up (Ray, its worker, Prefect's server), it listens on loopback only."""
    from tests.test_security import is_loopback, listening

    proc = mt_run(two_by_two_manifest, tmp_path / "out", tmp_path / "home", wait=False)
    killed, sockets = [], {}
    try:
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline and proc.poll() is None:
            for p in worker_processes("run"):
                sockets = listening(psutil.Process(proc.pid))
                p.send_signal(signal.SIGKILL)
                killed.append(p.pid)
                break
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        kill_session(proc)
    assert killed, "never saw a worker serving an item"
    assert len(sockets) >= 5, f"the check saw too few listening sockets to mean anything: {sockets}"
    exposed = {k: v for k, v in sockets.items() if not is_loopback(k[0])}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert proc.returncode == 0, stderr[-3000:]
    summary = summary_of(stdout)
    assert (summary["inversions_computed"], summary["transfers_computed"], summary["failed"]) == (2, 4, 0)
    (worker,) = summary["workers"]
    assert worker["model_loads"] == 2  # loaded, killed, restarted: loaded again
    assert_each_key_ok_once(tmp_path / "out", 2, 4)


@dataclass(frozen=True)
class Poison:
    """A work item that kills the process serving it, every time."""

    size = 1

    def run(self, model, out, worker):
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_poison_item_fails_alone_after_three_tries(prefect_harness, media, tmp_path, tiny_model_dir):
    import ray.cloudpickle

    from mtcore.method.config import InversionConfig
    from mtcore.data.catalog import store_relpath
    from tasks.items import InversionJob, PlannedModel
    from tasks.dispatch import WorkerDied
    from tasks.pool import PoolConfig, RaySession, WorkerPool

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need Poison's code
    model = PlannedModel(str(tiny_model_dir), None, "local:test")
    config = InversionConfig(steps=2, tokens_per_frame=1)
    jobs = [InversionJob(key * 64, name, str(media / f"{name}.mp4"), "", store_relpath("embeddings", key * 64),
                         config, model) for key, name in (("a", "right"), ("b", "left"))]
    results = {}
    with RaySession() as session, WorkerPool(session, str(tiny_model_dir), None, str(tmp_path),
                                             PoolConfig(workers=1)) as pool:
        pool.map([jobs[0], Poison(), jobs[1]], lambda item, result: results.__setitem__(item, result))
        (stats,) = pool.stats()
    assert isinstance(results[Poison()], WorkerDied)
    assert "worker died 3 times on this item" in str(results[Poison()])
    for job in jobs:  # the rest of the run completes
        assert results[job]["embeddings"][0]["status"] == "ok", results[job]
    assert stats.model_loads == 1 + 3  # the first load, then a restart after each of the three deaths


def test_a_lost_node_leaves_its_work_to_the_remaining_node(prefect_harness, media, tmp_path, tiny_model_dir):
    from ray.cluster_utils import Cluster

    from flows.bulk import bulk_run

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    leaving = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4", "left": media / "left.mp4"},
                              {"cat": media / "cat.png", "dog": media / "dog.png"}, model=str(tiny_model_dir),
                              inversion={"steps": 120, "tokens_per_frame": 2})
    out = tmp_path / "out"

    def remove_when_working() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if len(worker_processes("run")) >= 2:  # both workers busy: one of them is on the leaving node
                cluster.remove_node(leaving)
                return
            time.sleep(0.2)

    remover = threading.Thread(target=remove_when_working, daemon=True)
    remover.start()
    try:
        # one reference per inversion item: both workers invert at once, for seconds, so the node leaves mid-item
        summary = bulk_run(str(manifest), out=str(out), ray_address=cluster.address, workers=2, inversion_batch=1)
    finally:
        remover.join(timeout=5)
        cluster.shutdown()
    assert leaving not in cluster.worker_nodes  # the node did leave mid-run
    assert (summary.inversions_computed, summary.transfers_computed, summary.failed) == (2, 4, 0)
    # both workers are in the summary; the lost node's item went to the next free worker at once, so whether
    # the lost worker's restart (elsewhere) had loaded the model again before the run ended is timing
    assert len(summary.workers) == 2 and sum(w.items for w in summary.workers) == 2 + 4
    assert sum(w.model_loads for w in summary.workers) in (2, 3)
    assert_each_key_ok_once(out, 2, 4)


@dataclass(frozen=True)
class Slow:
    """A work item that says it started (a file), then works for a long time."""

    name: str
    started: str
    size = 1

    def run(self, model, out, worker):
        Path(self.started, self.name).touch()
        time.sleep(120)
        return {}


def test_no_capacity_left_fails_the_rest_clearly(tmp_path, tiny_model_dir):
    """The only node offering the workers' resource leaves and none replaces it: the items left fail with
    one clear error after the capacity wait, instead of the run waiting forever for a worker restart."""
    import ray.cloudpickle
    from ray.cluster_utils import Cluster

    from tasks.dispatch import WorkerDied
    from tasks.pool import PoolConfig, RaySession, WorkerPool

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    pinned = cluster.add_node(num_cpus=1, resources={"svd_host": 1})
    cluster.wait_for_nodes()
    items = [Slow(f"item{i}", str(tmp_path)) for i in range(3)]
    results = {}

    def remove_when_started() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (tmp_path / "item0").exists():
            time.sleep(0.1)
        cluster.remove_node(pinned)

    remover = threading.Thread(target=remove_when_started, daemon=True)
    try:
        with RaySession(cluster.address) as session:
            config = PoolConfig(workers=1, resources={"svd_host": 1}, capacity_wait=3)
            with WorkerPool(session, str(tiny_model_dir), None, str(tmp_path / "out"), config) as pool:
                remover.start()
                pool.map(items, lambda item, result: results.__setitem__(item.name, result))
    finally:
        remover.join(timeout=5)
        cluster.shutdown()
    assert sorted(results) == ["item0", "item1", "item2"]
    for result in results.values():
        assert isinstance(result, WorkerDied) and "no capacity left" in str(result) and "svd_host=1" in str(result)


def test_a_killed_driver_is_resumed_computing_only_what_is_missing(prefect_api, two_by_two_manifest, tmp_path):
    out, home = tmp_path / "out", tmp_path / "home"  # on the session's server: saves two start-ups
    proc = mt_run(two_by_two_manifest, out, home, "--inversion-batch", 1, wait=False, api=prefect_api)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not list((out / "store" / "embeddings").rglob("*.safetensors")):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # the driver only, mid-run: one embedding is made, its row not yet written
        proc.wait(timeout=60)
    finally:
        kill_session(proc)
    done_before = len(list((out / "store" / "embeddings").rglob("*.safetensors")))
    assert done_before == 1
    again = mt_run(two_by_two_manifest, out, home, api=prefect_api)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = summary_of(again.stdout)
    assert summary["inversions_computed"] == 2 - done_before and summary["inversions_cached"] == done_before
    assert summary["transfers_computed"] == 4
    assert_each_key_ok_once(out, 2, 4)
    # once more: nothing to do, recorded without Prefect's engine (flows/cached.py), in the catalog and in Prefect
    third = mt_run(two_by_two_manifest, out, home, api=prefect_api)
    assert third.returncode == 0, third.stderr[-3000:]
    cached = summary_of(third.stdout)
    assert (cached["inversions_cached"], cached["transfers_cached"], cached["inversions_computed"],
            cached["transfers_computed"], cached["workers"]) == (2, 4, 0, 0, [])
    assert cached["run_id"] in set(read_table(out, "runs").run_id)
    with urllib.request.urlopen(f"{prefect_api}/flow_runs/{cached['run_id']}", timeout=30) as response:
        record = json.loads(response.read())
    with urllib.request.urlopen(f"{prefect_api}/flows/{record['flow_id']}", timeout=30) as response:
        flow = json.loads(response.read())
    assert flow["name"] == "bulk-run" and record["state"]["type"] == "COMPLETED" and "nothing-to-do" in record["tags"]
    assert "2 inversions and 4 transfers cached" in record["state"]["message"]
    assert record["parameters"]["manifest"] == str(two_by_two_manifest)


def test_two_runs_on_one_output_folder_share_the_work(prefect_api, two_by_two_manifest, tmp_path):
    from tasks.claims import Claims

    out = tmp_path / "out"
    # a stale claim from a killed run (its pid is gone) must not block anyone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from mtcore.data.manifest import load_manifest
    from tasks.plan import plan_run

    first_key = plan_run(load_manifest(two_by_two_manifest), out).inversions_todo[0].key
    stale = Claims(out, "killed-run").path(first_key)
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "run_id": "killed-run"}))

    summaries = finish_all([mt_run(two_by_two_manifest, out, tmp_path / f"home{i}", wait=False, api=prefect_api)
                            for i in range(2)])
    assert sum(s["inversions_computed"] for s in summaries) == 2  # no item computed twice
    assert sum(s["transfers_computed"] for s in summaries) == 4
    for s in summaries:  # each run ends with everything done, by itself or by the other
        assert s["inversions_computed"] + s["inversions_cached"] == 2 and s["failed"] == 0
        assert s["transfers_computed"] + s["transfers_cached"] == 4
    assert_each_key_ok_once(out, 2, 4)
    assert not [p for p in (out / "claims").rglob("*") if p.is_file()], "claims left behind"


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(kind, two_by_two_manifest, tmp_path):
    mount = tmp_path / "mnt"
    mounted = _mount_tmpfs(mount, "size=1m,ro" if kind == "read-only" else "size=64k")
    try:
        if kind == "read-only":
            out = (mount if mounted else Path("/proc")) / "out"  # /proc: read-only even for root
            extra = ()
        else:
            out = mount / "out" if mounted else tmp_path / "out"
            extra = ("--min-free-mb", 1 if mounted else 10**9)  # a 64 KiB disk, or a threshold above any disk
        r = mt_run(two_by_two_manifest, out, tmp_path / "home", *extra)
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], capture_output=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}") and "Traceback" not in r.stderr
    assert ("cannot be" in lines[0]) if kind == "read-only" else ("free" in lines[0])
    assert "Starting temporary server" not in r.stderr  # refused before Prefect (or Ray) started


def test_drivers_on_disjoint_key_ranges_split_a_run(prefect_api, media, tmp_path, tiny_model_dir):
    """`mt run --part I/N`: N drivers (each with its own Ray) split one run on one OUT by transfer key range:
    each makes exactly the videos of its range, an embedding both need is made once (claims), and together
    they leave every key ok once. A part that is not I/N with 1 <= I <= N is refused in one line."""
    import numpy as np
    from PIL import Image

    from mtcore.data.manifest import load_manifest
    from tasks.plan import key_part, plan_run

    targets = {}
    for j in range(6):
        targets[f"t{j}"] = tmp_path / f"t{j}.png"
        Image.fromarray(np.full((32, 32, 3), 40 * j, np.uint8)).save(targets[f"t{j}"])
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4", "left": media / "left.mp4"}, targets,
                              model=str(tiny_model_dir))
    out = tmp_path / "out"
    keys = plan_run(load_manifest(manifest), out).transfers_todo.keys()
    parts = key_part(keys, 2)
    assert 0 < parts.sum() < len(keys)  # both ranges hold videos
    summaries = finish_all([mt_run(manifest, out, tmp_path / f"home{i}", "--part", f"{i}/2", wait=False,
                                   api=prefect_api) for i in (1, 2)])
    rows = read_table(out, "transfers")
    for i, s in enumerate(summaries):
        mine = rows[rows.run_id == s["run_id"]]
        expected = {k.decode() for k in keys[parts == i]}
        assert set(mine.transfer_key) == expected and s["transfers_computed"] == len(expected)
    assert sum(s["inversions_computed"] for s in summaries) == 2  # each embedding once, whoever needed it first
    assert_each_key_ok_once(out, 2, 12)
    bad = mt_run(manifest, out, tmp_path / "home3", "--part", "3/2", api=prefect_api)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --part: '3/2': must be I/N with 1 <= I <= N, e.g. 2/4"
