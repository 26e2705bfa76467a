"""Sweeps (several models and inversion configs in one manifest), metrics switched off then filled in
by `mt evaluate`, and `mt report` opened in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from mtcore.data.catalog import read_table
from tests.conftest import cli_env, write_manifest
from tests.test_cli_core import MT


@pytest.fixture(scope="module")
def sweep(prefect_harness, media, tmp_path_factory, tiny_model_dir):
    from flows.bulk import bulk_run
    from mtcore.method.svd import init_tiny_model

    other = init_tiny_model(tmp_path_factory.mktemp("models") / "other", seed=1)
    folder = tmp_path_factory.mktemp("sweep")
    manifest = write_manifest(folder, {"right": media / "right.mp4"}, {"cat": media / "cat.png", "dog": media / "dog.png"},
                              models=[str(tiny_model_dir), str(other)],
                              inversion=[{"steps": 2, "tokens_per_frame": 2}, {"steps": 3, "tokens_per_frame": 1}],
                              metrics=False)
    out = folder / "out"
    summary = bulk_run(str(manifest), out=str(out))
    return out, summary


def test_every_combination_is_planned_cached_and_catalogued(sweep):
    out, summary = sweep
    assert (summary.inversions_computed, summary.transfers_computed, summary.failed) == (4, 8, 0)
    assert summary.metrics_computed == 0  # the manifest switched metrics off
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    assert emb.embedding_key.is_unique and tr.transfer_key.is_unique
    combos = {(m, json.loads(c)["steps"]) for m, c in zip(emb.model, emb.inversion_config)}
    assert len(combos) == 4 and len(set(emb.model_id)) == 2  # 2 models x 2 inversion configs
    assert set(tr.transfer_config) and tr.model.notna().all() and tr.target_path.notna().all()
    assert len(summary.workers) == 2 and all(w.model_loads == 1 for w in summary.workers)  # one pool per model
    assert not (out / "catalog" / "metrics").exists()


def test_evaluate_fills_in_missing_metrics_once_and_summarises(sweep, prefect_api, tmp_path):
    out, _ = sweep
    env = cli_env(tmp_path, prefect_api, COLUMNS="200")
    first = subprocess.run([MT, "evaluate", str(out), "--group-by", "config", "--json"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads(first.stdout[first.stdout.index("{"):])
    assert report["filled"]["measured"] == 8
    groups = {g["config"]: g for g in report["groups"]}
    assert set(groups) == {"inv steps=2, tokens_per_frame=2 | tr steps=2", "inv steps=3, tokens_per_frame=1 | tr steps=2"}
    assert all(g["count"] == 4 and -1 <= g["motion_fidelity_mean"] <= 1 for g in groups.values())
    assert len(report["worst"]) == 5
    again = subprocess.run([MT, "evaluate", str(out), "--group-by", "model"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0 and "measured 0 transfers" in again.stdout
    assert len(read_table(out, "metrics")) == 8


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_report_plays_every_video_in_a_real_browser(sweep, prefect_api, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out, summary = sweep
    subprocess.run([MT, "evaluate", str(out), "--json"], capture_output=True, timeout=600, check=True,
                   env=cli_env(tmp_path, prefect_api))
    r = subprocess.run([MT, "report", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    page = out / "report" / "index.html"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        deadline = time.monotonic() + 30
        states = []
        while time.monotonic() < deadline:
            states = driver.execute_script("return [...document.querySelectorAll('video')].map(v => v.readyState)")
            if states and all(s >= 2 for s in states):
                break
            time.sleep(0.5)
        rows = driver.execute_script("return document.querySelectorAll('#transfers tbody tr').length")
        assert rows == 8 and len(states) == 2 * 8  # a reference and an output video per transfer
        assert all(s >= 2 for s in states), states
        images = driver.execute_script("return [...document.querySelectorAll('img.media')].map(i => i.naturalWidth)")
        assert len(images) == 8 and all(w > 0 for w in images)
        # sorting by a metric reorders rows; filtering by reference keeps its rows
        driver.execute_script("document.querySelector('th[data-key=psnr_first]').click()")
        assert "sorted" in driver.execute_script("return document.querySelector('th[data-key=psnr_first]').className")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = out / "report" / "screenshot.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # at scale the page holds its first page and loads every transfer from data/items.js beside it
        r = subprocess.run([MT, "report", str(out), "--page-size", "3"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert (out / "report" / "data" / "items.js").is_file()
        driver.get(page.as_uri())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not driver.execute_script("return complete"):
            time.sleep(0.1)
        assert driver.execute_script("return items.length") == 8
        assert "1 / 3" in driver.execute_script("return document.getElementById('pager').textContent")
        driver.execute_script("document.getElementById('next').click()")
        assert driver.execute_script("return document.querySelectorAll('#transfers tbody tr').length") == 3
        srcs = driver.execute_script("return [...document.querySelectorAll('#transfers tbody video')].map(v => v.src)")
        assert len(srcs) == 6 and all("/store/videos/" in v or "/media/" in v for v in srcs)
        summary = driver.execute_script("return document.querySelectorAll('#summary-reference tr').length")
        assert summary == 1 + driver.execute_script("return data.references.length")  # a header and a row each
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
