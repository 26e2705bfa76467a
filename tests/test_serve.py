"""`mt serve` registers a scheduled deployment on a real Prefect server (started here, on loopback),
and a run triggered with `prefect deployment run` completes and fills the catalogs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mtcore.data.catalog import read_table
from tests.conftest import cli_env, write_manifest
from tests.test_cli_core import MT

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = cli_env(home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)

    def healthy():
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None and pytest.fail((home / "server.log").read_text()[-2000:])

    wait_until(healthy, 120, "the Prefect server")
    yield api, cli_env(home, api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc.terminate()
    proc.wait(30)


def test_mt_serve_without_server_is_a_clear_error(tmp_path, media):
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png"})
    r = subprocess.run([MT, "serve", str(manifest), "--cron", "0 3 * * *"], capture_output=True, text=True,
                       env=cli_env(tmp_path))
    assert r.returncode == 2 and "PREFECT_API_URL" in r.stderr and "prefect server start" in r.stderr


def test_served_deployment_runs_on_trigger(server, media, tmp_path, tiny_model_dir):
    api, env = server
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png"},
                              model=str(tiny_model_dir))
    out = tmp_path / "out"
    log = open(tmp_path / "serve.log", "w")
    # A schedule far away (1 January), so only the triggered run happens during the test.
    serve = subprocess.Popen([MT, "serve", str(manifest), "--cron", "0 0 1 1 *", "--name", "nightly", "--out", str(out)],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        def deployment():
            r = httpx.get(f"{api}/deployments/name/bulk-run/nightly", timeout=5)
            return r.json() if r.status_code == 200 else None

        dep = wait_until(deployment, 120, "the deployment to register")
        assert dep["schedules"] and dep["schedules"][0]["schedule"]["cron"] == "0 0 1 1 *"
        trig = subprocess.run([PREFECT, "deployment", "run", "bulk-run/nightly"], capture_output=True, text=True, env=env, timeout=120)
        assert trig.returncode == 0, trig.stdout + trig.stderr
        run_id = next(l.split()[-1] for l in trig.stdout.splitlines() if "UUID" in l)

        def final_state():
            state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = wait_until(final_state, 300, "the triggered flow run to finish")
        assert state == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        serve.terminate()
        serve.wait(30)
    assert read_table(out, "transfers").status.tolist() == ["ok"]
    assert read_table(out, "runs").run_id.tolist() == [run_id]
