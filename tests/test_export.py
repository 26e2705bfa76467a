"""`mt export`: a run's outputs as a dataset, read back by real clients only (webdataset, Hugging Face
`datasets`, pyarrow, OpenCV); labels from the manifest, the gate, leak-free splits, retry seeds, and an
export killed mid-write."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
MT = str(Path(sys.executable).with_name("mt"))


def labelled_manifest(folder: Path, **extra) -> Path:
    """The demo manifest (3 references x 3 targets, with its labels and dataset block), media paths made
    absolute, few steps: the pipeline and the export are under test here, not the model's quality."""
    doc = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    for item in doc["references"] + doc["targets"]:
        item["path"] = str(ROOT / "manifests" / item["path"])
    doc.update(inversion={"steps": 3, "tokens_per_frame": 2}, transfer={"steps": 2}, allow_outside=True, **extra)
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


RETRY = {"where": "seed > 0 OR NOT (reference_id = 'slide_right' AND target_id = 'cat')", "max_seeds": 3}
"""Forces one pair (slide_right x cat) to fail its first seed; every other output passes at once."""


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, prefect_harness):
    """A real run (built-in model, metrics on) of the demo manifest with `retry:`: 9 videos at seed 0,
    and slide_right x cat again at seed 1."""
    from flows.bulk import bulk_run

    folder = tmp_path_factory.mktemp("labelled")
    manifest = labelled_manifest(folder, retry=RETRY)
    summary = bulk_run(str(manifest), out=str(folder / "out"))
    assert summary.transfers_computed == 10 and summary.failed == 0
    return manifest, folder / "out"


def mt(*args, home, check=True, **kw):
    done = subprocess.run([MT, *map(str, args)], capture_output=True, text=True, env=cli_env(home), cwd=ROOT, **kw)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def decode_mp4(data: bytes, tmp: Path) -> int:
    """Frames OpenCV decodes from mp4 bytes."""
    import cv2

    path = tmp / "sample.mp4"
    path.write_bytes(data)
    capture, frames = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        frames += 1
    return frames


def test_export_to_webdataset_is_read_by_webdataset_and_hugging_face(labelled_run, tmp_path):
    import webdataset as wds

    manifest, out = labelled_run
    dest = tmp_path / "dataset"
    done = mt("export", manifest, "--to", dest, "--out", out, "--split", "train=0.5,test=0.5", home=tmp_path)
    assert "kept 10" in done.stdout
    index = json.loads((dest / "index.json").read_text())
    assert index["samples"] == 10 and sum(index["splits"].values()) == 10
    shards = sorted(dest.glob("*.tar"))
    assert {s.name for s in shards} == {s["name"] for s in index["shards"]}

    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False))
    assert len(samples) == 10
    for sample in samples:
        meta = json.loads(sample["json"])
        assert decode_mp4(sample["mp4"], tmp_path) == 8  # the built-in model's 8 frames
        assert sample["png"].startswith(b"\x89PNG")
        action = {"slide_right": "slide right", "fall_down": "fall down", "orbit": "orbit"}[meta["reference"]["id"]]
        assert meta["reference"]["labels"] == {"action": action}
        assert meta["target"]["labels"] == {"license": "cc0-1.0", "source": "make_demo_media.py"}
        assert set(meta["metrics"]) >= {"motion_fidelity", "frame_change"} and meta["seed"] in (0, 1)
        assert meta["seed"] == 0 or (meta["reference"]["id"], meta["target"]["id"]) == ("slide_right", "cat")
        assert meta["split"] == next(s["split"] for s in index["shards"] if s["name"] in sample["__url__"])

    # Hugging Face datasets, offline, reads the folder as it is: the card's configs name the splits'
    # shards and its features type every field (the webdataset builder would otherwise guess them from
    # the first 5 samples)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = ("import datasets, json, sys; ds = datasets.load_dataset(sys.argv[1]); "
            "print(json.dumps({k: [r['json']['reference']['labels']['action'] for r in v] for k, v in ds.items()}))")
    loaded = subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True, text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    actions = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert sum(map(len, actions.values())) == 10
    assert set(a for v in actions.values() for a in v) == {"slide right", "fall down", "orbit"}

    provenance = pq.read_table(dest / "provenance.parquet").to_pylist()
    assert {(r["kind"], r["id"]) for r in provenance} == {
        ("reference", "slide_right"), ("reference", "fall_down"), ("reference", "orbit"),
        ("target", "cat"), ("target", "robot"), ("target", "star")}
    assert {r["license"] for r in provenance if r["kind"] == "target"} == {"cc0-1.0"}
    card = (dest / "README.md").read_text()
    assert card.startswith('---\nlicense: "cc0-1.0"\n') and "size_categories:\n- n<1K" in card
    assert "# toy-motion-demo" in card and "metrics.png" in card and (dest / "metrics.png").stat().st_size > 1000

    # the same export again writes nothing
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    again = mt("export", manifest, "--to", dest, "--out", out, "--split", "train=0.5,test=0.5", home=tmp_path)
    assert "nothing written" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    # the same export with a shard gone is made whole again, without --overwrite
    shards[0].unlink()
    mt("export", manifest, "--to", dest, "--out", out, "--split", "train=0.5,test=0.5", home=tmp_path)
    assert {p.name for p in dest.glob("*.tar")} == {s["name"] for s in index["shards"]}
    # another export into it is refused, unless --overwrite
    other = mt("export", manifest, "--to", dest, "--out", out, home=tmp_path, check=False)
    assert other.returncode == 2 and "holds another export" in other.stderr
    mt("export", manifest, "--to", dest, "--out", out, "--overwrite", "--format", "parquet", home=tmp_path)
    assert not list(dest.glob("*.tar")) and json.loads((dest / "index.json").read_text())["format"] == "parquet"
    rows = pq.read_table(sorted(dest.glob("train-*.parquet"))[0]).to_pylist()
    assert rows and all(decode_mp4(r["mp4"], tmp_path) > 0 for r in rows[:2])


def test_editing_a_label_changes_the_export_not_the_keys(labelled_run, tmp_path):
    from mtcore.data.manifest import load_manifest
    from tasks.export import export_dataset, planned_for

    manifest, out = labelled_run
    edited = tmp_path / "edited.yaml"
    edited.write_text(manifest.read_text().replace("action: slide right", "action: sliding right"))
    keys = [planned_for(load_manifest(m), str(out))[0].column("transfer_key").to_pylist() for m in (edited, manifest)]
    assert keys[0] == keys[1] and len(keys[0]) == 9 * 3  # 9 pairs x the 3 seeds retry may use
    first = export_dataset(str(manifest), str(tmp_path / "a"), out=str(out))
    second = export_dataset(str(edited), str(tmp_path / "b"), out=str(out))
    assert first.kept == second.kept == 10 and first.fingerprint != second.fingerprint

    # ids are the manifest's, not the catalog's: a reference renamed (same content, same keys) is exported
    # under its new id and with its labels
    from mtcore.data.samples import sample_table

    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(manifest.read_text().replace("id: orbit", "id: circle"))
    table = sample_table(load_manifest(renamed), str(out), planned_for(load_manifest(renamed), str(out))[0])
    circles = [a for i, a in zip(table.column("reference_id").to_pylist(), table.column("reference_action").to_pylist())
               if i == "circle"]
    assert circles == ["orbit"] * 3 and "orbit" not in table.column("reference_id").to_pylist()


def test_the_gate_refuses_unknown_columns_and_an_empty_result(labelled_run, tmp_path):
    manifest, out = labelled_run
    unknown = mt("export", manifest, "--to", tmp_path / "d", "--out", out, "--where", "motion_fidelty > 0.5",
                 home=tmp_path, check=False)
    assert unknown.returncode == 2
    assert "unknown column 'motion_fidelty'" in unknown.stderr and "motion_fidelity" in unknown.stderr
    assert "reference_action" in unknown.stderr  # labels are columns too
    reads_a_file = mt("export", manifest, "--to", tmp_path / "d", "--out", out, "--where",
                      "(SELECT count(*) FROM read_text('/etc/hostname')) > 0", home=tmp_path, check=False)
    assert reads_a_file.returncode == 2 and "disabled" in reads_a_file.stderr  # a condition reads no file
    not_run = labelled_manifest(tmp_path, seeds=[5])  # no key of it in OUT, whose catalogs hold others
    never = mt("export", not_run, "--to", tmp_path / "d", "--out", out, home=tmp_path, check=False)
    assert never.returncode == 1 and "no finished transfer of demo.yaml: run `mt run" in never.stderr
    nothing = mt("export", manifest, "--to", tmp_path / "d", "--out", out, "--where",
                 "motion_fidelity > 2 AND reference_action = 'orbit'", home=tmp_path, check=False)
    assert nothing.returncode == 1 and "no sample kept" in nothing.stderr and "fails on 10" in nothing.stderr
    assert not (tmp_path / "d" / "index.json").exists()
    kept = mt("export", manifest, "--to", tmp_path / "e", "--out", out, "--where", "reference_action = 'slide right'",
              "--per-pair", "best:motion_fidelity", home=tmp_path)  # slide_right x cat (2 seeds), x robot, x star
    assert "kept 3" in kept.stdout and "dropped 1 other seeds" in kept.stdout


def test_an_out_without_metrics_says_to_run_evaluate(labelled_run, tmp_path):
    import shutil

    manifest, out = labelled_run
    bare = tmp_path / "out"
    shutil.copytree(out, bare)
    shutil.rmtree(bare / "catalog" / "metrics")
    done = mt("export", manifest, "--to", tmp_path / "d", "--out", bare, home=tmp_path, check=False)
    assert done.returncode == 1 and "mt evaluate" in done.stderr


def test_split_both_keeps_every_reference_and_target_in_one_split_and_growth_moves_nothing():
    from mtcore.data.select import assign_splits, parse_split

    fractions = parse_split("train=0.6,val=0.2,test=0.2")

    def table(refs: int, targets: int) -> pa.Table:
        pairs = [(f"r{i}", f"t{j}") for i in range(refs) for j in range(targets)]
        return pa.table({"reference_sha256": [f"sha-{r}" for r, _ in pairs], "target_sha256": [f"sha-{t}" for _, t in pairs],
                         "transfer_key": [f"{r}-{t}" for r, t in pairs]})

    small, crossed = assign_splits(table(30, 30), fractions, "both")
    assert crossed > 0 and small.num_rows + crossed == 900
    for column in ("reference_sha256", "target_sha256"):
        seen: dict[str, set] = {}
        for group, split in zip(small.column(column).to_pylist(), small.column("split").to_pylist()):
            seen.setdefault(group, set()).add(split)
        assert all(len(s) == 1 for s in seen.values()), column
    big, _ = assign_splits(table(60, 30), fractions, "both")
    before = dict(zip(small.column("transfer_key").to_pylist(), small.column("split").to_pylist()))
    after = dict(zip(big.column("transfer_key").to_pylist(), big.column("split").to_pylist()))
    assert all(after[k] == s for k, s in before.items())
    for bad in ("train=0.9,val=0.2", "train=1.0,val=0", "train=-0.5,val=1.5"):
        with pytest.raises(Exception, match="--split"):
            parse_split(bad)


def test_retry_made_one_more_video_for_the_failing_pair_and_a_rerun_makes_none(labelled_run):
    from flows.bulk import bulk_run
    from mtcore.data.catalog import read_table

    manifest, out = labelled_run
    made = read_table(out, "transfers")
    assert sorted(made[made.status == "ok"].seed) == [0] * 9 + [1]  # 9 pairs at seed 0, the failing one at seed 1
    assert made[made.seed == 1].iloc[0][["reference_id", "target_id"]].tolist() == ["slide_right", "cat"]
    again = bulk_run(str(manifest), out=str(out))
    assert again.transfers_computed == 0 and len(read_table(out, "transfers")) == 10


def test_a_retry_condition_with_an_unknown_column_is_refused_before_any_work(tmp_path):
    manifest = labelled_manifest(tmp_path, retry={"where": "motion_fidelty > 0.5", "max_seeds": 2})
    done = mt("validate", manifest, home=tmp_path, check=False)
    assert done.returncode == 2 and "retry.where: unknown column 'motion_fidelty'" in done.stderr
    two_seeds = labelled_manifest(tmp_path, seeds=[0, 1], retry=RETRY)
    done = mt("validate", two_seeds, home=tmp_path, check=False)
    assert done.returncode == 2 and "takes one first seed" in done.stderr


def test_a_killed_export_never_looks_complete_and_the_next_one_completes(tmp_path):
    from tests.synthetic import make_run

    manifest, out = make_run(tmp_path, references=10, targets=300)
    dest = tmp_path / "dataset"
    args = [MT, "export", str(manifest), "--to", str(dest), "--out", str(out), "--shard-size", "50KB"]
    proc = subprocess.Popen(args, env=cli_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(dest.glob("train-*.tar")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(dest.glob("train-*.tar")), "the export ended before its first shard appeared"
    assert not (dest / "index.json").exists()
    for shard in dest.glob("train-*.tar"):  # what is there under a final name is whole
        with tarfile.open(shard) as tar:
            assert len(tar.getnames()) % 3 == 0
    done = mt("export", manifest, "--to", dest, "--out", out, "--shard-size", "50KB", home=tmp_path)
    assert "kept 3000" in done.stdout
    index = json.loads((dest / "index.json").read_text())
    assert index["samples"] == 3000 and sum(s["samples"] for s in index["shards"]) == 3000
    assert {p.name for p in dest.glob("*.tar")} == {s["name"] for s in index["shards"]}


def test_export_to_object_storage(labelled_run, bucket, tmp_path):
    from mtcore.io.storage import filesystem
    from tasks.export import export_dataset

    manifest, out = labelled_run
    summary = export_dataset(str(manifest), f"s3://{bucket}/datasets/v1", out=str(out), split="train=0.5,test=0.5",
                             split_by="both")
    fs, _ = filesystem(f"s3://{bucket}")
    index = json.loads(fs.cat_file(f"{bucket}/datasets/v1/index.json"))
    assert index["samples"] == summary.kept == sum(summary.splits.values())
    total = 0
    for shard in index["shards"]:
        data = fs.cat_file(f"{bucket}/datasets/v1/{shard['name']}")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            total += len([n for n in tar.getnames() if n.endswith(".mp4")])
    assert total == summary.kept
    again = export_dataset(str(manifest), f"s3://{bucket}/datasets/v1", out=str(out), split="train=0.5,test=0.5",
                           split_by="both")
    assert not again.written
