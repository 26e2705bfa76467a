"""Two Ray nodes on one machine, each declaring a (fake) GPU: workers request num_gpus=1 and
rows record which node did the work. All services bind to this machine."""

from __future__ import annotations

import pytest

from mtcore.data.catalog import read_table
from tests.conftest import write_manifest


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # a large GPU (for inversions) and a small one (for transfers), told apart by custom resources
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False,
                                                      "resources": {"A100": 1}})
    c.add_node(num_cpus=1, num_gpus=1, resources={"L4": 1})
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_two_gpu_nodes_share_the_work(prefect_harness, cluster, media, tmp_path, tiny_model_dir):
    from flows.bulk import bulk_run

    manifest = write_manifest(tmp_path, {"right": media / "right.mp4", "left": media / "left.mp4"},
                              {"cat": media / "cat.png", "dog": media / "dog.png"}, model=str(tiny_model_dir))
    out = tmp_path / "out"
    result = bulk_run(str(manifest), out=str(out), ray_address=cluster.address, gpus_per_worker=1)
    assert result.failed == 0 and result.transfers_computed == 4
    workers = result.workers
    assert len(workers) == 2 and all(w.model_loads == 1 for w in workers)
    nodes = {w.worker.split("/")[1] for w in workers}
    assert len(nodes) == 2  # one actor per node: each node's single GPU is taken
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    row_nodes = {w.split("/")[1] for w in list(emb.worker) + list(tr.worker)}
    assert row_nodes == nodes  # both nodes did work, and the rows say which
    assert {w.worker for w in workers} >= set(emb.worker)


def test_each_stage_lands_where_it_asked_and_transfers_stream(prefect_harness, cluster, media, tmp_path,
                                                              tiny_model_dir):
    """Pools per stage: inversions ask for the A100 node, transfers for the L4 node, each with a whole GPU.
    The stages run at once: the quick inversion's transfers are made while the slow one still runs."""
    import json

    import ray

    from flows.bulk import bulk_run

    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png", "dog": media / "dog.png"},
                              model=str(tiny_model_dir), inversion=[{"steps": 2, "tokens_per_frame": 2},
                                                                    {"steps": 250, "tokens_per_frame": 2}])
    out = tmp_path / "out"
    result = bulk_run(str(manifest), out=str(out), ray_address=cluster.address, gpus_per_worker=1, inversion_batch=1,
                      invert_pool={"resources": {"A100": 1}, "workers": 1},
                      transfer_pool={"resources": {"L4": 1}, "workers": 1})
    assert result.failed == 0 and (result.inversions_computed, result.transfers_computed) == (2, 4)
    ray.init(address=cluster.address)
    try:
        node_of = {n["NodeID"][:8]: ("A100" if "A100" in n["Resources"] else "L4") for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    assert {node_of[w.split("/")[1].removeprefix("node-")] for w in emb.worker} == {"A100"}
    assert {node_of[w.split("/")[1].removeprefix("node-")] for w in tr.worker} == {"L4"}
    assert len(result.workers) == 2  # one worker per stage, each loaded the model once
    steps = {row.embedding_key: json.loads(row.inversion_config)["steps"] for row in emb.itertuples()}
    slow_done = emb[emb.embedding_key.map(steps) == 250].created_at.iloc[0]
    quick_videos = tr[tr.embedding_key.map(steps) == 2]
    assert len(quick_videos) == 2 and (quick_videos.created_at < slow_done).all()  # streamed, not after a barrier


def test_one_shared_worker_serves_a_references_transfers_before_the_next_inversion(prefect_harness, cluster, media,
                                                                                   tmp_path, tiny_model_dir):
    """One pool for both stages, one worker: after the quick inversion, its two videos are made before the
    slow inversion starts (transfers go first on a shared pool), not after every inversion."""
    import json

    from flows.bulk import bulk_run

    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png", "dog": media / "dog.png"},
                              model=str(tiny_model_dir), inversion=[{"steps": 2, "tokens_per_frame": 2},
                                                                    {"steps": 60, "tokens_per_frame": 2}])
    out = tmp_path / "out"
    result = bulk_run(str(manifest), out=str(out), ray_address=cluster.address, gpus_per_worker=1, workers=1,
                      inversion_batch=1, resources={"A100": 1})
    assert result.failed == 0 and (result.inversions_computed, result.transfers_computed) == (2, 4)
    assert len(result.workers) == 1 and result.workers[0].model_loads == 1
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    steps = {row.embedding_key: json.loads(row.inversion_config)["steps"] for row in emb.itertuples()}
    slow_done = emb[emb.embedding_key.map(steps) == 60].created_at.iloc[0]
    quick_videos = tr[tr.embedding_key.map(steps) == 2]  # one worker: made before the slow inversion, or after it
    assert len(quick_videos) == 2 and (quick_videos.created_at < slow_done).all()
