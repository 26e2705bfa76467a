"""Messy inputs, all in one run: every bad reference, target or embedding gets a clear error naming the
file, the manifest entry and the field, the accepted oddities are converted, and the other rows complete."""

from __future__ import annotations

import subprocess
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from mtcore.data.catalog import read_table
from mtcore.errors import InputError
from tests.conftest import cli_env, moving_square_frames
from tests.test_cli_core import MT

SECRET = "hf_not_a_real_token_4242"
BAD_REFERENCES = {  # id -> expected words in the error
    "missing": "file not found",
    "empty": "empty file (0 bytes)",
    "text": "not a video ffmpeg can read",
    "truncated": "truncated or damaged",
    "one_frame": "needs at least 2 distinct frames",
    "still": "needs at least 2 distinct frames",
    "audio_only": "no video stream (audio only)",
    "zero_length": "no video stream",
    "token_in_path": "file not found",
}
GOOD_REFERENCES = ("good", "animated_gif")
BAD_TARGETS = {
    "empty": "empty file (0 bytes)",
    "not_an_image": "unreadable image",
    "one_pixel": "1x1 px is too small",
    "bomb": "decompression bomb",
}
GOOD_TARGETS = ("good", "png16", "cmyk", "exif_rotated", "gray", "palette", "rgba", "animated_gif")


def _ffmpeg(*args) -> None:
    from mtcore.io.videoio import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", *map(str, args)], check=True)


def make_media(d) -> tuple[dict, dict]:
    from mtcore.io.videoio import write_mp4

    refs, targets = {}, {}
    refs["good"] = write_mp4(moving_square_frames(12), d / "good.mp4")
    refs["missing"] = d / "missing.mp4"
    (d / "empty.mp4").write_bytes(b"")
    refs["empty"] = d / "empty.mp4"
    (d / "text.mp4").write_text("this is a text file named like a video\n")
    refs["text"] = d / "text.mp4"
    long = write_mp4(moving_square_frames(64, seed=3), d / "long.mp4")
    (d / "truncated.mp4").write_bytes(long.read_bytes()[: long.stat().st_size // 2])
    refs["truncated"] = d / "truncated.mp4"
    refs["one_frame"] = write_mp4(moving_square_frames(1), d / "one_frame.mp4")
    refs["still"] = write_mp4(np.repeat(moving_square_frames(1), 10, axis=0), d / "still.mp4")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", d / "audio_only.mp4")
    refs["audio_only"] = d / "audio_only.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=7", "-frames:v", "0", "-pix_fmt", "yuv420p", d / "zero_length.mp4")
    refs["zero_length"] = d / "zero_length.mp4"
    frames = [Image.fromarray(f) for f in moving_square_frames(10)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=140, loop=0)
    refs["animated_gif"] = d / "animated.gif"

    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(d / "good.png")
    targets["good"] = d / "good.png"
    (d / "empty.png").write_bytes(b"")
    targets["empty"] = d / "empty.png"
    (d / "not_an_image.png").write_text("hello")
    targets["not_an_image"] = d / "not_an_image.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(d / "one_pixel.png")
    targets["one_pixel"] = d / "one_pixel.png"
    Image.new("1", (12_000, 10_000)).save(d / "bomb.png")  # 120 MP of zeros: a few KB on disk
    targets["bomb"] = d / "bomb.png"
    Image.fromarray((np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)).save(d / "png16.png")
    targets["png16"] = d / "png16.png"
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    targets["cmyk"] = d / "cmyk.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(d / "exif_rotated.jpg", exif=exif)
    targets["exif_rotated"] = d / "exif_rotated.jpg"
    Image.fromarray(rgb).convert("L").save(d / "gray.png")
    targets["gray"] = d / "gray.png"
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    targets["palette"] = d / "palette.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(d / "rgba.png")
    targets["rgba"] = d / "rgba.png"
    targets["animated_gif"] = d / "animated.gif"
    return refs, targets


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory, tiny_model_dir):
    import yaml

    d = tmp_path_factory.mktemp("messy")
    refs, targets = make_media(d)
    refs["token_in_path"] = d / f"{SECRET}" / "gone.mp4"  # credentials that ended up in a path
    pairs = [{"reference": r, "target": "good"} for r in refs] + [{"reference": "good", "target": t} for t in targets if t != "good"]
    manifest = d / "messy.yaml"
    manifest.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "references": [{"id": k, "path": str(v.relative_to(d))} for k, v in refs.items()],
        "targets": [{"id": k, "path": v.name} for k, v in targets.items()], "pairs": pairs, "seeds": [0],
        "inversion": {"steps": 1, "tokens_per_frame": 1}, "transfer": {"steps": 1}, "metrics": False,
    }, sort_keys=False))
    run = subprocess.run([MT, "run", str(manifest), "--out", str(d / "out")], capture_output=True, text=True,
                         env=cli_env(d / "home", HF_TOKEN=SECRET), timeout=900)
    emb = read_table(d / "out", "embeddings").set_index("reference_id")
    tr = read_table(d / "out", "transfers").set_index(["reference_id", "target_id"])
    index = {"reference": {k: i for i, k in enumerate(refs)}, "target": {k: i for i, k in enumerate(targets)}}
    files = {"reference": refs, "target": targets}
    return run, emb, tr, index, files


@pytest.mark.parametrize("kind, item, words", [
    *[("reference", k, w) for k, w in BAD_REFERENCES.items()],
    *[("target", k, w) for k, w in BAD_TARGETS.items()],
    *[("reference", k, None) for k in GOOD_REFERENCES],
    *[("target", k, None) for k in GOOD_TARGETS],
])
def test_each_input_gets_a_clear_answer_and_the_rest_complete(messy_run, kind, item, words):
    run, emb, tr, index, files = messy_run
    assert run.returncode == 1 and "Traceback" not in run.stderr  # some rows failed, the run finished
    row = emb.loc[item] if kind == "reference" else tr.loc[("good", item)]
    if words is None:
        assert row.status == "ok", row.error
        return
    assert row.status == "failed" and words in row.error, row.error
    entry = f"messy.yaml: {kind}s[{index[kind][item]}].path: "
    assert row.error.startswith(entry), (row.error, entry)  # the manifest entry and field...
    assert str(files[kind][item]).replace(SECRET, "***") in row.error  # ...and the file (secrets redacted)
    if kind == "reference":  # its transfers fail with it, saying why
        assert tr.loc[(item, "good")].status == "failed" and "its inversion failed" in tr.loc[(item, "good")].error


def test_accepted_images_are_converted_as_a_person_sees_them(tmp_path):
    from mtcore.io.videoio import read_image

    _, targets = make_media(tmp_path)
    upright = read_image(targets["exif_rotated"])
    assert upright.size == (48, 64)  # 64 x 48 stored, shown rotated
    sixteen = np.asarray(read_image(targets["png16"]))
    assert sixteen.min() == 0 and sixteen.max() == 255 and len(np.unique(sixteen)) > 100  # scaled, not clipped
    for name in ("cmyk", "gray", "palette", "rgba", "animated_gif"):
        assert read_image(targets[name]).mode == "RGB"


def test_a_huge_reference_is_decoded_one_frame_at_a_time(tmp_path):
    from mtcore.io.videoio import read_video

    side, frames = 2000, 10
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={side}x{side}:rate=7", "-frames:v", frames, "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", tmp_path / "huge.mp4")
    tracemalloc.start()
    video = read_video(tmp_path / "huge.mp4", 8, 64, 64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    frame_bytes = side * side * 3
    assert tuple(video.shape) == (8, 3, 64, 64)
    assert peak < 3 * frame_bytes, f"peak {peak / 2**20:.0f} MiB for {frame_bytes / 2**20:.0f} MiB frames"


@pytest.mark.parametrize("problem, words", [
    ("other_model", "made for model"), ("other_width", "token width"), ("float16", "float16"),
    ("nan", "NaN or infinite"), ("not_an_embedding", "not a motion embedding"), ("pickle", "not a safetensors file"),
])
def test_bad_embeddings_are_refused_without_pickle(tmp_path, problem, words):
    import pickle

    import torch
    from safetensors.torch import save_file

    from mtcore.method.embedding import MotionEmbedding, load_embedding, save_embedding

    path = tmp_path / "e.safetensors"
    good = MotionEmbedding(torch.zeros(9, 2, 32), model_id="local:a")
    if problem == "other_model":
        save_embedding(good, path)
    elif problem == "other_width":
        save_embedding(MotionEmbedding(torch.zeros(9, 2, 16), model_id="local:b"), path)
    elif problem in ("float16", "nan"):
        tokens = good.tokens.half() if problem == "float16" else good.tokens.clone().index_fill_(0, torch.tensor([3]), float("nan"))
        save_file({"motion_embedding": tokens}, str(path), metadata=good.metadata())
    elif problem == "not_an_embedding":
        save_file({"weights": torch.zeros(3)}, str(path))
    else:
        path.write_bytes(pickle.dumps({"motion_embedding": good.tokens}))
    with pytest.raises(InputError) as info:
        load_embedding(path, model_id="local:b", token_dim=32)
    assert str(path) in str(info.value) and words in str(info.value)


def test_manifest_paths_and_links_may_not_escape_its_folder(tmp_path):
    from mtcore.data.manifest import ManifestError, load_manifest

    inside = tmp_path / "m"
    inside.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (inside / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    (inside / "cat.png").write_bytes(b"x")
    (inside / "ok.mp4").symlink_to(inside / "cat.png")  # a link that stays inside is fine
    manifest = inside / "m.yaml"
    manifest.write_text("references: [{id: a, path: link.mp4}, {id: b, path: ok.mp4}]\ntargets: [{id: c, path: cat.png}]\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    (line,) = info.value.problems
    assert line.startswith(f"{manifest}: references[0].path: 'link.mp4' is a link to") and "outside" in line


def test_ten_thousand_rows_validate_in_seconds(tmp_path):
    import time

    from mtcore.data.manifest import load_manifest

    lines = ["references:"] + [f"  - {{id: r{i}, path: r{i}.mp4}}" for i in range(5000)]
    lines += ["targets:"] + [f"  - {{id: t{i}, path: t{i}.png}}" for i in range(5000)]
    lines += ["pairs:"] + [f"  - {{reference: r{i}, target: t{i}}}" for i in range(5000)]
    (tmp_path / "big.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    manifest = load_manifest(tmp_path / "big.yaml")
    seconds = time.perf_counter() - t0
    assert len(manifest.references) + len(manifest.targets) == 10_000 and len(manifest.pairs) == 5000
    assert seconds < 30, seconds  # a loose bound: catches a quadratic reader, not a benchmark


def test_secrets_stay_out_of_catalogs_and_output(messy_run):
    run, emb, tr, _, _ = messy_run
    assert "***" in emb.loc["token_in_path"].error
    for table in (emb.reset_index(), tr.reset_index()):
        assert not table.astype(str).apply(lambda col: col.str.contains(SECRET)).any().any()
    assert SECRET not in run.stdout and SECRET not in run.stderr
