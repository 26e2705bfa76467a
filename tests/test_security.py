"""A local run listens on loopback only, and keeps secrets out of catalogs and logs."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

import psutil

from mtcore.catalog import read_table
from tests.conftest import write_manifest
from tests.test_cli_core import MT
from tests.test_faults import kill_session


def listening(root: psutil.Process) -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every listening TCP socket and bound UDP socket of a process tree."""
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and conn.laddr):  # TCP LISTEN, or UDP
                    found[(conn.laddr.ip, conn.laddr.port)] = " ".join(proc.cmdline()[:2])[:80]
        except psutil.Error:
            continue
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback on a dual-stack socket
    return (mapped or ip).is_loopback


def test_a_local_run_listens_on_loopback_only(media, tmp_path, tiny_model_dir):
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png"},
                              model=str(tiny_model_dir), inversion={"steps": 400, "tokens_per_frame": 2})
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([MT, "run", str(manifest), "--out", str(tmp_path / "out")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: dict = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(listening(psutil.Process(proc.pid)))
            if any("ModelWorker" in name for name in seen.values()) or len(seen) > 8:
                time.sleep(2)  # the worker is up: Ray and Prefect have opened everything they open
                seen.update(listening(psutil.Process(proc.pid)))
                break
            time.sleep(0.5)
    finally:
        kill_session(proc)  # the run and every process it started (they hold its output pipes)
        proc.communicate(timeout=60)
    assert seen, "found no listening sockets at all: the check itself is broken"
    exposed = {k: v for k, v in seen.items() if not is_loopback(k[0])}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_secrets_stay_out_of_catalogs_and_output(media, tmp_path, tiny_model_dir):
    secret = "hf_not_a_real_token_4242"
    folder = tmp_path / f"data-{secret}"  # credentials that ended up in a path
    folder.mkdir()
    manifest = write_manifest(folder, {"right": media / "right.mp4", "gone": folder / "gone.mp4"},
                              {"cat": media / "cat.png"}, model=str(tiny_model_dir),
                              inversion={"steps": 1, "tokens_per_frame": 1}, metrics=False)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"), HF_TOKEN=secret)
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run([MT, "run", str(manifest), "--out", str(tmp_path / "out")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1  # the missing reference failed; its error names its path
    emb, tr, runs = (read_table(tmp_path / "out", t) for t in ("embeddings", "transfers", "runs"))
    assert "***" in emb.set_index("reference_id").loc["gone", "error"]
    for table in (emb, tr, runs):
        assert not table.astype(str).apply(lambda col: col.str.contains(secret)).any().any()
    assert secret not in r.stdout and secret not in r.stderr
