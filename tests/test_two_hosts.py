"""A real two-host cluster on this machine: no shared filesystem, media and OUT in object storage.

Two network namespaces joined by a veth pair, each with its own mount namespace and so its own /tmp
(tests/hosts.py). Host A runs the S3 server (moto, tests/s3server.py), the Ray head and the driver
(`mt run`); host B runs `ray start --address=...` and the only model worker, pinned there by a custom
resource only B offers. Everything the tests start, they stop; the namespaces and veths are removed.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from mtcore.method.identity import model_identity
from tests import hosts

ROOT = Path(__file__).resolve().parents[1]
PORT = 9000
BUCKET = "mt-cluster"
HEAD = f"{hosts.HOST_A_IP}:6379"
RESOURCE = {"mt_model_host": 1}
IN = f"s3://{BUCKET}/in"
OUT = f"s3://{BUCKET}/out"
MODEL = f"s3://{BUCKET}/models/toy-svd"
MODEL_CACHE = "/tmp/mt-models"
"""Each host's model cache: in its own /tmp (the hosts share every other folder of this machine)."""

pytestmark = pytest.mark.skipif(hosts.available() is not None, reason=f"two hosts: {hosts.available()}")


class Process:
    """A process in a host whose output lines are events the test waits on (no sleeps)."""

    def __init__(self, host: hosts.Host, args: list[str], env: dict):
        self.proc = host.popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first output line (from now on) containing `text`; fails if the process ends or time runs out."""
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"ended before printing {text!r}:\n{''.join(self.lines[-40:])}")
            if text in line:
                return line

    def finish(self, timeout: float) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        while self._queue.get(timeout=30) is not None:
            pass
        return rc, "".join(self.lines)


@pytest.fixture(scope="module")
def cluster():
    with hosts.two_hosts() as (a, b):
        aws = {"AWS_ACCESS_KEY_ID": "mt-test-key", "AWS_SECRET_ACCESS_KEY": "mt-test-secret-0123456789abcdef",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{hosts.HOST_A_IP}:{PORT}"}
        env = hosts.ray_env({**aws, "PREFECT_HOME": "/tmp/prefect-home", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                             "COLUMNS": "160", "MT_MODEL_CACHE": MODEL_CACHE})
        env.pop("PREFECT_API_URL", None)  # the driver in host A starts Prefect's temporary server there
        server = Process(a, [hosts.PYTHON, "tests/s3server.py", "--host", hosts.HOST_A_IP, "--port", str(PORT),
                             "--bucket", BUCKET, "--down-seconds", "8"], env)
        server.wait_for("ready", timeout=60)
        hosts.ray_head(a, num_cpus=1, env={**env, **hosts.FAST_HEALTH_CHECK_ENV})
        hosts.ray_node(b, HEAD, num_cpus=1, resources=RESOURCE, env=env)
        nodes = hosts.wait_nodes(a, HEAD, 2, timeout=180)
        node_b = next(n["node_id"] for n in nodes if n["ip"] == hosts.HOST_B_IP)
        a.run([hosts.PYTHON, "tests/in_host.py", "upload", str(ROOT / "manifests"), IN], env=env, cwd=ROOT,
              timeout=120, check=True)
        # the demo with its model in the bucket: neither host has a copy until it fetches one into its own /tmp
        a.run([hosts.PYTHON, "tests/in_host.py", "upload", str(ROOT / "mtcore" / "assets" / "toy-svd"), MODEL], env=env,
              cwd=ROOT, timeout=120, check=True)
        demo = a.run([hosts.PYTHON, "-c", (
            f"import sys, yaml; d = yaml.safe_load(open('manifests/demo.yaml')); d['model'] = '{MODEL}'; "
            "yaml.safe_dump(d, sys.stdout)")], env=env, cwd=ROOT, timeout=60)
        assert demo.returncode == 0, demo.stderr
        Path(a.tmp_root / "demo-model-in-bucket.yaml").write_text(demo.stdout)
        a.run([hosts.PYTHON, "tests/in_host.py", "put", "/tmp/demo-model-in-bucket.yaml", f"{IN}/demo-model-in-bucket.yaml"],
              env=env, cwd=ROOT, timeout=60, check=True)
        yield {"a": a, "b": b, "env": env, "server": server, "node_b": node_b}


def mt_run(cluster, manifest: str, out: str = OUT) -> Process:
    return Process(cluster["a"], [str(Path(hosts.PYTHON).with_name("mt")), "run", manifest, "--out", out,
                                  "--ray-address", HEAD, "--resources", json.dumps(RESOURCE), "--json"],
                   cluster["env"])


def inspect(cluster, out: str = OUT) -> dict:
    done = cluster["a"].run([hosts.PYTHON, "tests/in_host.py", "inspect", out], env=cluster["env"], cwd=ROOT,
                            timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def summary(output: str) -> dict:
    """The --json summary (an indented JSON object among the log lines)."""
    start = output.index('{\n  "run_id"')
    return json.loads(output[start:output.index("\n}\n", start) + 2])


def test_demo_on_object_storage_runs_on_the_other_host_through_a_storage_restart(cluster):
    """The demo with OUT and its model in the bucket, its worker on host B, which has no copy of the model
    and fetches one; the S3 server restarts mid-run (its objects kept, every connection dropped): retries
    cost time, not rows. Then DuckDB on host A reads the catalogs from the bucket, host B's disk holds
    nothing but Ray's temp and its model cache, the rows name the identity of the model's folder on disk,
    and a re-run computes nothing."""
    assert not any(p.startswith("mt-models") for p in cluster["b"].listdir_tmp())
    run = mt_run(cluster, f"{IN}/demo-model-in-bucket.yaml")
    run.wait_for("inversion 1/3", timeout=900)  # the worker on B has written an embedding: work is under way
    cluster["server"].proc.send_signal(signal.SIGUSR1)
    cluster["server"].wait_for("restarted", timeout=60)
    rc, output = run.finish(timeout=1200)
    assert rc == 0, output[-4000:]
    result = summary(output)
    assert (result["inversions_computed"], result["transfers_computed"], result["failed"]) == (3, 9, 0)
    assert all(f"/node-{cluster['node_b'][:8]}/" in w["worker"] for w in result["workers"]), result["workers"]
    state = inspect(cluster)
    for table, count, folder in (("embeddings", 3, "store/embeddings"), ("transfers", 9, "store/videos")):
        rows = state["tables"][table]
        assert len(rows) == count and {r["status"] for r in rows} == {"ok"}  # no row lost, none twice
        assert len({r["key"] for r in rows}) == count
        assert sorted(r["path"] for r in rows) == state["files"][folder]  # every artifact is in the bucket
    assert state["files"]["claims"] == state["files"][".probe"] == state["files"][".loads"] == []
    # nothing on host B's own disk but Ray's temp (scratch copies live in Ray's temp and are removed) and the
    # model it fetched, once
    on_b = cluster["b"].listdir_tmp()
    assert [p for p in on_b if not p.startswith(("ray/", "mt-models/"))] == []
    fetched = {p.split("/")[1] for p in on_b if p.startswith("mt-models/") and p.endswith("model_index.json")}
    assert len(fetched) == 1, on_b
    assert {r["model_id"] for r in state["tables"]["embeddings"]} == {model_identity(ROOT / "mtcore" / "assets" / "toy-svd")}
    assert [p for p in on_b if "/mt-scratch/" in p] == []  # scratch copies removed once used
    rerun = mt_run(cluster, f"{IN}/demo-model-in-bucket.yaml")
    rc, output = rerun.finish(timeout=600)
    assert rc == 0, output[-3000:]
    again = summary(output)
    assert (again["inversions_computed"], again["transfers_computed"]) == (0, 0)
    assert (again["inversions_cached"], again["transfers_cached"]) == (3, 9)
    assert len(inspect(cluster)["tables"]["transfers"]) == 9


def test_a_local_out_on_a_cluster_fails_before_any_model_loads(cluster):
    run = mt_run(cluster, f"{IN}/demo.yaml", out="/tmp/local-out")
    rc, output = run.finish(timeout=600)
    assert rc == 2, output[-3000:]
    assert "does not see the output folder /tmp/local-out" in output and "s3://" in output
    assert "inversion 1/" not in output
    assert not any(p.startswith("local-out") for p in cluster["b"].listdir_tmp())


def test_a_lost_host_costs_a_restart_not_a_row(cluster):
    """Host B's raylet SIGKILLed mid-run: its worker dies with it; a node with the same resource joins on
    host A (as an autoscaler would add one), the worker comes back there, and every key ends ok once."""
    manifest = cluster["a"].run([hosts.PYTHON, "-c", (
        "import sys, yaml; d = yaml.safe_load(open('manifests/demo.yaml')); d['inversion']['steps'] = 20; "
        "d['name'] = 'demo-lost-host'; yaml.safe_dump(d, sys.stdout)")], env=cluster["env"], cwd=ROOT, timeout=60)
    assert manifest.returncode == 0, manifest.stderr
    Path(cluster["a"].tmp_root / "lost-host.yaml").write_text(manifest.stdout)
    cluster["a"].run([hosts.PYTHON, "tests/in_host.py", "put", "/tmp/lost-host.yaml", f"{IN}/lost-host.yaml"],
                     env=cluster["env"], cwd=ROOT, timeout=60, check=True)
    out = f"s3://{BUCKET}/out-lost-host"
    run = mt_run(cluster, f"{IN}/lost-host.yaml", out=out)
    run.wait_for("inversion 1/3", timeout=900)
    hosts.kill_raylet(cluster["b"])
    hosts.wait_nodes(cluster["a"], HEAD, 1, timeout=120)  # the head has declared B dead
    hosts.ray_node(cluster["a"], HEAD, num_cpus=1, resources=RESOURCE, env=cluster["env"])
    rc, output = run.finish(timeout=1500)
    assert rc == 0, output[-4000:]
    result = summary(output)
    assert result["failed"] == 0 and result["inversions_computed"] + result["inversions_cached"] == 3
    # the worker that finished the run is the one Ray restarted on the new node, not B's
    assert result["workers"] and all(f"/node-{cluster['node_b'][:8]}/" not in w["worker"] for w in result["workers"])
    assert [w["model_loads"] for w in result["workers"]] == [2]  # loaded on B, then again after the restart
    state = inspect(cluster, out)
    for table, count in (("embeddings", 3), ("transfers", 9)):
        ok = [r["key"] for r in state["tables"][table] if r["status"] == "ok"]
        assert len(ok) == len(set(ok)) == count
