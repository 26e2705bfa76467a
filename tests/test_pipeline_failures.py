"""A bad row fails alone and is recorded; structural manifest errors refuse the run up front."""

from __future__ import annotations

import subprocess

import pytest

from mtcore.data.catalog import read_table
from tests.conftest import cli_env, write_manifest
from tests.test_cli_core import MT


def mt(*args, cwd, home, api=None):
    return subprocess.run([MT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=cli_env(home, api),
                          timeout=600)


@pytest.fixture(scope="module")
def bad_run(prefect_api, media, tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "corrupt.mp4").write_bytes(b"this is not a video")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    manifest = write_manifest(
        folder,
        {"right": media / "right.mp4", "corrupt": folder / "corrupt.mp4"},
        {"cat": media / "cat.png", "broken": folder / "broken.png", "gone": folder / "gone.png"},
        model=str(tiny_model_dir),
    )
    out = folder / "out"
    run = mt("run", manifest, "--out", out, cwd=folder, home=tmp_path_factory.mktemp("prefect"), api=prefect_api)
    return manifest, out, run


def test_failed_rows_are_recorded_and_the_rest_proceeds(bad_run):
    _, out, run = bad_run
    assert run.returncode == 1, run.stderr[-3000:]
    emb = read_table(out, "embeddings").set_index("reference_id")
    assert emb.loc["right", "status"] == "ok"
    assert emb.loc["corrupt", "status"] == "failed" and "unreadable video" in emb.loc["corrupt", "error"]
    tr = read_table(out, "transfers").set_index(["reference_id", "target_id"])
    assert len(tr) == 6  # 2 references x 3 targets, one row each
    assert tr.loc[("right", "cat"), "status"] == "ok"
    assert "unreadable image" in tr.loc[("right", "broken"), "error"]
    assert "file not found" in tr.loc[("right", "gone"), "error"]
    for target in ("cat", "broken", "gone"):
        row = tr.loc[("corrupt", target)]
        assert row.status == "failed" and row.error
    runs = read_table(out, "runs")
    assert runs.failed.tolist() == [1 + 5] and runs.transfers_computed.tolist() == [1]


def test_summary_says_what_failed_and_where_catalogs_are(bad_run):
    _, out, run = bad_run
    assert "failed:     6" in run.stdout
    assert "unreadable video" in run.stdout
    assert str(out / "catalog") in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_validate_reports_item_problems_without_running(bad_run, tmp_path):
    manifest, _, _ = bad_run
    r = mt("validate", manifest, cwd=tmp_path, home=tmp_path)
    assert r.returncode == 1
    assert "reference:corrupt" in r.stderr and "target:broken" in r.stderr and "target:gone" in r.stderr
    assert "file not found" in r.stderr
    assert not (tmp_path / "mt-out").exists()


def test_structural_errors_refuse_the_run_naming_entry_and_field(media, tmp_path):
    manifest = write_manifest(tmp_path, {"a": media / "right.mp4", "b": media / "left.mp4"}, {"cat": media / "cat.png"},
                              inversion={"stepz": 3}, pairs=[{"reference": "a", "target": "kitten"}])
    text = manifest.read_text().replace("id: b", "id: a")
    manifest.write_text(text)
    for cmd in ("validate", "run"):
        r = mt(cmd, manifest, "--out", tmp_path / "out", cwd=tmp_path, home=tmp_path) if cmd == "run" else mt(cmd, manifest, cwd=tmp_path, home=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "inversion.stepz" in r.stderr
        assert "references[1].id" in r.stderr and "duplicate" in r.stderr
        assert "pairs[0].target" in r.stderr and "kitten" in r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_nothing_to_do_record_retries_a_busy_prefect_server():
    """Prefect's SQLite server answers 503 while its database is locked; the cached path's REST calls retry it as
    Prefect's client does (after Retry-After), and a real error still fails at once."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from flows.cached import record_flow_run

    answers = {"/api/flows/": [503, 503, 200], "/api/flow_runs/": [429, 200]}
    calls = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            code = answers[self.path].pop(0)
            body = json.dumps({"id": f"id-of-{self.path}"}).encode()
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api"
        assert record_flow_run(url, "bulk-run", {}, "nothing to do") == "id-of-/api/flow_runs/"
        assert calls == ["/api/flows/"] * 3 + ["/api/flow_runs/"] * 2
        answers["/api/flows/"] = [404]
        with pytest.raises(Exception, match="404"):
            record_flow_run(url, "bulk-run", {}, "nothing to do")
    finally:
        server.shutdown()
