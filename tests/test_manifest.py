"""Manifest loading: a valid manifest resolves fully; structural problems are all reported at once."""

from __future__ import annotations

import hashlib
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtcore.method.config import InversionConfig, TransferConfig
from mtcore.errors import InputError
from mtcore.data.manifest import ManifestError, load_manifest
from mtcore.data.media import check_media

VALID = """\
model: ./models/tiny
references:
  - {id: wave, path: videos/wave.mp4}
  - {id: jump, path: videos/jump.mp4}
targets:
  - {id: cat, path: images/cat.png}
  - {id: dog, path: images/dog.png}
  - {id: owl, path: images/owl.png}
pairs: cross
seeds: [0, 7]
inversion: {steps: 3, tokens_per_frame: 2, betas: [0.8, 0.9]}
transfer: {steps: 2}
"""


def write(folder: Path, text: str, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value.problems


def test_valid_manifest_resolves_everything(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    path = write(tmp_path, VALID)
    m = load_manifest(path)
    assert m.path == path and m.name == "demo"
    assert m.model == str(tmp_path / "models" / "tiny") and m.model_is_local and m.revision is None
    assert [(r.id, r.path, r.index) for r in m.references] == [
        ("wave", tmp_path / "videos/wave.mp4", 0), ("jump", tmp_path / "videos/jump.mp4", 1)]
    assert [t.id for t in m.targets] == ["cat", "dog", "owl"]
    assert m.pairs == (("wave", "cat"), ("wave", "dog"), ("wave", "owl"),
                       ("jump", "cat"), ("jump", "dog"), ("jump", "owl"))
    assert m.seeds == (0, 7)
    assert m.inversion == InversionConfig(steps=3, tokens_per_frame=2, betas=(0.8, 0.9))
    assert m.transfer == TransferConfig(steps=2)
    assert m.allow_outside is False
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_defaults_hub_model_and_explicit_pairs(tmp_path):
    path = write(tmp_path, """\
        name: nightly
        model: stabilityai/stable-video-diffusion-img2vid
        revision: fp16
        references: [{id: wave, path: wave.mp4}]
        targets: [{id: cat, path: cat.png}, {id: dog, path: dog.png}]
        pairs: [{reference: wave, target: dog}]
        """)
    m = load_manifest(path)
    assert (m.name, m.model, m.model_is_local, m.revision) == (
        "nightly", "stabilityai/stable-video-diffusion-img2vid", False, "fp16")
    assert m.pairs == (("wave", "dog"),)
    assert m.seeds == (0,)
    assert m.inversion == InversionConfig() and m.transfer == TransferConfig()


def test_model_omitted_means_default(tmp_path):
    m = load_manifest(write(tmp_path, "references: [{id: a, path: a.mp4}]\ntargets: [{id: b, path: b.png}]\n"))
    assert m.model is None and m.model_is_local is False


def test_all_structural_problems_are_reported_at_once(tmp_path):
    path = write(tmp_path, """\
        modle: x
        references:
          - {id: wave, path: videos/wave.mp4}
          - {id: jump}
          - {id: wave, path: videos/w2.mp4}
          - {id: "bad id", path: b.mp4}
        targets:
          - {id: cat, path: images/cat.png, colour: red}
          - {id: owl, path: ../x.png}
        pairs:
          - {reference: wave, target: cat}
          - {reference: wave, target: cat}
          - {reference: wav, target: cat}
        seeds: [zero, 1, 1]
        inversion: {stepz: 3, lr: fast}
        transfer: {steps: 0}
        """)
    found = problems(path)
    p = str(path)
    expected = [
        f"{p}: modle: unknown key (did you mean 'model'?)",
        f"{p}: references[1].path: missing",
        f"{p}: references[2].id: duplicate id 'wave' (also references[0])",
        f"{p}: targets[0]: unknown key 'colour'",
        f"{p}: targets[1].path: '../x.png' is outside the manifest folder (set allow_outside: true to allow)",
        f"{p}: pairs[1]: duplicate pair 'wave' x 'cat' (also pairs[0])",
        f"{p}: pairs[2].reference: unknown reference id 'wav' (did you mean 'wave'?)",
        f"{p}: seeds[0]: must be an integer, got 'zero'",
        f"{p}: seeds[2]: duplicate seed 1 (also seeds[1])",
        f"{p}: inversion.stepz: unknown key (did you mean 'steps'?)",
        f"{p}: inversion.lr: must be a number, got 'fast'",
        f"{p}: transfer.steps: must be >= 1, got 0",
    ]
    for line in expected:
        assert line in found
    assert any(line.startswith(f"{p}: references[3].id: must be a string") for line in found)
    assert len(found) == len(expected) + 1


def test_error_message_is_one_problem_per_line_and_an_input_error(tmp_path):
    path = write(tmp_path, "references: []\ntargets: [{id: a, path: a.png}]\nseeds: []\n")
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert str(info.value).splitlines() == [
        f"{path}: references: must be a non-empty list of {{id, path}}",
        f"{path}: seeds: must be a non-empty list of integers, got []",
    ]


def test_manifest_error_survives_pickle(tmp_path):
    # Workers (Prefect, Ray) send exceptions back by pickle.
    path = write(tmp_path, "references: []\ntargets: []\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.problems == info.value.problems and len(copy.problems) == 2
    assert str(copy) == str(info.value)


def test_missing_sections_and_non_mapping(tmp_path):
    assert problems(write(tmp_path, "seeds: [1]\n")) == [
        f"{tmp_path / 'demo.yaml'}: references: missing", f"{tmp_path / 'demo.yaml'}: targets: missing"]
    assert problems(write(tmp_path, "- just a list\n", "list.yaml")) == [
        f"{tmp_path / 'list.yaml'}: must be a mapping with at least references and targets"]
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_yaml_errors_name_the_line(tmp_path):
    bad = write(tmp_path, "references: [{id: a, path: a.mp4}\ntargets: []\n")
    (line,) = problems(bad)
    assert line.startswith(f"{bad}: line 2, column ")
    dup = write(tmp_path, "seeds: [1]\nseeds: [2]\n", "dup.yaml")
    assert problems(dup) == [f"{dup}: line 2, column 1: duplicate key 'seeds'"]


def test_allow_outside_and_absolute_paths(tmp_path):
    inner = tmp_path / "m"
    inner.mkdir()
    body = f"references: [{{id: a, path: ../a.mp4}}]\ntargets: [{{id: b, path: {tmp_path / 'b.png'}}}]\n"
    found = problems(write(inner, body))
    assert [line.split(": ")[1] for line in found] == ["references[0].path", "targets[0].path"]
    m = load_manifest(write(inner, "allow_outside: true\n" + body))
    assert m.references[0].path == tmp_path / "a.mp4" and m.targets[0].path == tmp_path / "b.png"
    # An absolute path inside the folder is fine without allow_outside.
    inside = f"references: [{{id: a, path: {inner / 'a.mp4'}}}]\ntargets: [{{id: b, path: b.png}}]\n"
    m = load_manifest(write(inner, inside))
    assert m.references[0].path == inner / "a.mp4"


def test_model_path_problems(tmp_path):
    base = "references: [{id: a, path: a.mp4}]\ntargets: [{id: b, path: b.png}]\n"
    path = write(tmp_path, "model: ./models/none\nrevision: main\n" + base)
    assert problems(path) == [
        f"{path}: model: './models/none': local model folder not found ({tmp_path / 'models' / 'none'})",
        f"{path}: revision: only applies to a hub model; model is a local folder",
    ]
    (tmp_path / "weights").mkdir()
    m = load_manifest(write(tmp_path, "model: weights\n" + base))  # exists -> local, even without ./
    assert m.model == str(tmp_path / "weights") and m.model_is_local


def test_check_media_reports_missing_and_unreadable(tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    m = load_manifest(write(tmp_path, """\
        references: [{id: gone, path: gone.mp4}, {id: junk, path: garbage.mp4}]
        targets: [{id: gone, path: gone.png}, {id: junk, path: garbage.png}]
        """))
    found = check_media(m)
    assert set(found) == {"reference:gone", "reference:junk", "target:gone", "target:junk"}
    assert found["reference:gone"] == f"{tmp_path / 'gone.mp4'}: file not found"
    assert found["target:gone"] == f"{tmp_path / 'gone.png'}: file not found"
    assert found["reference:junk"].startswith(f"{tmp_path / 'garbage.mp4'}: unreadable")
    assert found["target:junk"].startswith(f"{tmp_path / 'garbage.png'}: unreadable")
    assert all("\n" not in v for v in found.values())


def test_check_media_accepts_readable_media(tmp_path):
    from mtcore.io.videoio import write_mp4

    rng = np.random.default_rng(0)
    write_mp4(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), tmp_path / "wave.mp4", fps=7)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    m = load_manifest(write(tmp_path, """\
        references: [{id: wave, path: wave.mp4}]
        targets: [{id: cat, path: cat.png}, {id: dog, path: dog.png}]
        """))
    assert check_media(m) == {"target:dog": f"{tmp_path / 'dog.png'}: file not found"}


def test_sampled_pairs_are_reproducible_and_stable_as_entries_are_added(tmp_path):
    from mtcore.data.pairs import sample_targets

    targets = [f"t{i}" for i in range(50)]
    drawn = {r: sample_targets(r, targets, 5, seed=7) for r in ("r0", "r1", "r2")}
    assert all(len(v) == 5 for v in drawn.values()) and drawn["r0"] != drawn["r1"]
    assert drawn == {r: sample_targets(r, targets, 5, seed=7) for r in drawn}  # reproducible
    assert sample_targets("r0", targets, 5, seed=8) != drawn["r0"]  # the seed draws anew
    more = targets + [f"new{i}" for i in range(50)]
    for r, before in drawn.items():  # 50 more targets: each pair kept, or displaced by a newcomer
        after = sample_targets(r, more, 5, seed=7)
        kept = [t for t in after if not t.startswith("new")]
        assert set(kept) <= set(before) and len(after) == 5
    assert sample_targets("r0", targets[:3], 5, seed=7) == targets[:3]  # fewer than K: all of them
    path = tmp_path / "m.yaml"
    for i in range(4):
        (tmp_path / f"t{i}.png").write_bytes(b"x")
    path.write_text("references: [{id: a, path: a.mp4}, {id: b, path: b.mp4}]\n"
                    "targets: [" + ", ".join(f"{{id: t{i}, path: t{i}.png}}" for i in range(4)) + "]\n"
                    "pairs: {per_reference: 2, seed: 3}\n")
    m = load_manifest(path)
    assert len(m.pairs) == 4 and [p[0] for p in m.pairs] == ["a", "a", "b", "b"]
    assert [t for r, t in m.pairs if r == "a"] == sample_targets("a", [f"t{i}" for i in range(4)], 2, 3)
    path.write_text(path.read_text().replace("{per_reference: 2, seed: 3}", "{per_reference: 0, sed: 1}"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert any("pairs: unknown key 'sed' (did you mean 'seed'?)" in p for p in caught.value.problems)
    assert any("pairs.per_reference: must be a positive integer, got 0" in p for p in caught.value.problems)


def test_labels_dataset_and_retry_are_read_and_bad_ones_refused_one_line_each(tmp_path):
    good = write(tmp_path, """\
        references:
          - {id: wave, path: v.mp4, labels: {action: waving, score: 3, hard: true, weight: 0.5}}
        targets:
          - {id: cat, path: c.png}
        dataset: {name: waves, license: cc-by-4.0}
        retry: {where: "motion_fidelity >= 0.6", max_seeds: 4}
        """)
    m = load_manifest(good)
    assert m.references[0].labels == (("action", "waving"), ("hard", True), ("score", 3), ("weight", 0.5))
    assert m.targets[0].labels == ()
    assert (m.dataset.name, m.dataset.license, m.dataset.description) == ("waves", "cc-by-4.0", "")
    assert (m.retry.where, m.retry.max_seeds, m.retry.seeds(m.seeds[0])) == ("motion_fidelity >= 0.6", 4, (0, 1, 2, 3))
    bad = write(tmp_path, f"""\
        references:
          - {{id: wave, path: v.mp4, labels: {{action: {{nested: 1}}, Caption: x, id: 3}}}}
        targets:
          - {{id: cat, path: c.png, labels: {{caption: "{'x' * 1001}"}}}}
          - {{id: dog, path: d.png, labels: [a, b]}}
        dataset: {{name: waves, licence: mit}}
        retry: {{where: "", max_seeds: 0}}
        metrics: false
        """, "bad.yaml")
    found = problems(bad)
    expected = ["references[0].labels.action: must be a string, number or boolean, got dict",
                "references[0].labels: label name 'Caption' must be lower-case",
                "references[0].labels.id: 'id' is reserved",
                "targets[0].labels.caption: too long: 1001 characters (at most 1000)",
                "targets[1].labels: must be a mapping", "dataset: unknown key 'licence'",
                "retry.where: must be a condition", "retry.max_seeds: must be an integer from 1 to 64"]
    for text in expected:
        assert sum(text in line for line in found) == 1, (text, found)
    assert all(line.startswith(f"{bad}: ") and "\n" not in line for line in found)


def test_labels_are_in_no_cache_key(tmp_path):
    from tasks.plan import plan_run

    for name, labels in (("a", ""), ("b", ", labels: {action: jumping, license: cc0-1.0}")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "v.mp4").write_bytes(b"video")
        (folder / "c.png").write_bytes(b"image")
        write(folder, f"references:\n  - {{id: wave, path: v.mp4{labels}}}\ntargets:\n  - {{id: cat, path: c.png{labels}}}\n")
    keys = [list(plan_run(load_manifest(tmp_path / n / "demo.yaml"), str(tmp_path / "out")).transfers_todo.keys())
            + [j.key for j in plan_run(load_manifest(tmp_path / n / "demo.yaml"), str(tmp_path / "out")).inversions_todo]
            for n in ("a", "b")]
    assert keys[0] == keys[1] and len(keys[0]) == 2
