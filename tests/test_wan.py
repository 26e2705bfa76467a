"""The Wan I2V family on a tiny random WanImageToVideoPipeline (real diffusers classes, built from configs):
the oracle against the stock pipeline, routing, inversion, the family's refusals, and a whole `mt run`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mtcore.errors import EmbeddingMismatch, InputError
from mtcore.method.config import InversionConfig, TransferConfig
from tests.conftest import moving_square_frames, write_manifest
from tests.test_cli_core import mt


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "tiny-wan"
    r = mt("init-model", folder, "--family", "wan-i2v", "--size", 32, "--frames", 9)
    assert r.returncode == 0, r.stderr
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanImageToVideoPipeline"
    return folder


@pytest.fixture(scope="module")
def wan(wan_dir):
    from mtcore.method.models import load_model

    return load_model(wan_dir, device="cpu", dtype="fp32")


def _image(seed: int = 0, size: int = 32) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8))


def test_family_is_found_from_the_folder(wan):
    assert wan.family == "wan-i2v" and type(wan).__name__ == "WanModel"
    assert wan.model_id.startswith("wan-i2v:local:")
    assert (wan.default_num_frames, wan.default_size, wan.token_dim) == (9, (32, 32), 32)
    assert wan.embedding_groups(9) == 4  # 9 frames -> 3 latent frames -> 3 + 1 groups


def test_oracle_one_group_equals_the_stock_pipeline(wan):
    """One group holding a prompt's own tokens: the routed sampler = stock WanImageToVideoPipeline, guidance on."""
    from mtcore.method.wan_sampling import sample

    prompt = "a cat walks left"
    image = _image(3)
    stock = wan.pipe(image=image, prompt=prompt, height=32, width=32, num_frames=5, num_inference_steps=3,
                     guidance_scale=5.0, output_type="pt", generator=torch.Generator().manual_seed(7)).frames
    n = len(wan.pipe.tokenizer(prompt).input_ids)
    tokens = wan.prompt_tokens(prompt)[:n][None]  # (1, N, D): one group
    ours = sample(wan, [image], None, TransferConfig(steps=3, num_frames=5), [7], tokens=tokens, num_frames=5)
    assert ours.shape == stock.shape == (1, 5, 3, 32, 32)
    assert (ours - stock).abs().max() < 2e-6
    # and the tokens are what made them equal: other tokens change the video (the tiny random model is weakly
    # text-sensitive, so "changed" is measured against the oracle's own difference)
    other = sample(wan, [image], None, TransferConfig(steps=3, num_frames=5), [7], tokens=tokens * 3 + 1, num_frames=5)
    assert (other - stock).abs().max() > 5e-5
    # no embedding at all: the stock model with the empty prompt, through the public transfer
    from mtcore.method.sampling import transfer

    plain = wan.pipe(image=image, prompt="", height=32, width=32, num_frames=5, num_inference_steps=3,
                     guidance_scale=5.0, output_type="pt", generator=torch.Generator().manual_seed(7)).frames
    assert (transfer(wan, [image], None, TransferConfig(steps=3, num_frames=5), [7]) - plain).abs().max() < 2e-6


def test_wan_2_2_two_experts_match_the_stock_pipeline(tmp_path):
    """Wan 2.2 I2V's layout (transformer_2 below boundary_ratio, no CLIP): routed on both experts, and one group
    of a prompt's tokens still reproduces the stock pipeline, through the switch between them."""
    from mtcore.method.models import load_model
    from mtcore.method.wan_sampling import sample

    r = mt("init-model", tmp_path / "wan22", "--family", "wan-i2v", "--wan-version", "2.2")
    assert r.returncode == 0, r.stderr
    wan22 = load_model(tmp_path / "wan22", device="cpu", dtype="fp32")
    assert len(wan22.invertible_modules()) == 2 and wan22.image_context([_image()]) is None
    prompt, image = "a dog jumps", _image(4)
    stock = wan22.pipe(image=image, prompt=prompt, height=32, width=32, num_frames=5, num_inference_steps=4,
                       guidance_scale=5.0, output_type="pt", generator=torch.Generator().manual_seed(1)).frames
    n = len(wan22.pipe.tokenizer(prompt).input_ids)
    ours = sample(wan22, [image], None, TransferConfig(steps=4, num_frames=5), [1],
                  tokens=wan22.prompt_tokens(prompt)[:n][None], num_frames=5)
    assert (ours - stock).abs().max() < 2e-6
    from mtcore.method.inversion import invert

    frames = torch.from_numpy(moving_square_frames(5, 32, 3)).permute(0, 3, 1, 2).float() / 127.5 - 1
    emb, stats = invert(wan22, frames, InversionConfig(steps=4, num_frames=5, tokens_per_frame=2, batch_size=4))
    assert emb.tokens.shape == (3, 2, 32) and stats.loss_after < stats.loss_before
    # bf16 autocast across both experts (their outputs gathered in the experts' dtype)
    emb16, _ = invert(wan22, frames, InversionConfig(steps=2, num_frames=5, tokens_per_frame=2, batch_size=4,
                                                     autocast_bf16=True))
    assert torch.isfinite(emb16.tokens).all()


def test_a_group_reaches_only_its_latent_frame(wan):
    """Changing group g changes the first block's output for latent frame g only; the shared group, all."""
    block = wan.transformer.blocks[0]
    seen = {}
    handle = block.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out.detach().clone()))
    torch.manual_seed(0)
    frames = 3
    x = torch.randn(1, 36, frames, 4, 4)
    tokens = torch.randn(1, frames + 1, 2, 32)
    image = torch.randn(1, 17, 16)

    def first_block(tok):
        with wan.routing.route(frames + 1, 2):
            wan.velocity(x[:, :16], x[:, 16:], torch.tensor([400.0]), wan.hidden_states(tok), image)
        return seen["out"].view(1, frames, -1, seen["out"].shape[-1])  # (B, F', tokens of a frame, dim)

    try:
        base = first_block(tokens)
        for g in range(frames):
            changed = tokens.clone()
            changed[:, g] += 1.0
            diff = (first_block(changed) - base).abs().amax(dim=(0, 2, 3))  # per latent frame
            assert diff[g] > 1e-4
            assert torch.all(diff[torch.arange(frames) != g] == 0), diff
        shared = tokens.clone()
        shared[:, frames] += 1.0
        assert torch.all((first_block(shared) - base).abs().amax(dim=(0, 2, 3)) > 1e-4)
    finally:
        handle.remove()


def test_inversion_lowers_the_flow_matching_loss_and_touches_only_the_embedding(wan):
    from mtcore.method.inversion import invert, invert_batch

    before = {k: v.clone() for k, v in wan.transformer.state_dict().items()}
    frames = torch.from_numpy(moving_square_frames(9, 32, 3)).permute(0, 3, 1, 2).float() / 127.5 - 1
    config = InversionConfig(steps=25, tokens_per_frame=3, lr=0.1, seed=2)
    emb, stats = invert(wan, frames, config, reference_sha256="ab" * 32)
    assert stats.loss_after < stats.loss_before
    assert emb.tokens.shape == (4, 3, 32) and emb.num_frames == 9 and emb.family == "wan-i2v"
    assert not any(p.requires_grad or p.grad is not None for p in wan.pipe.transformer.parameters())
    assert all(torch.equal(before[k], v) for k, v in wan.transformer.state_dict().items())
    # a batch gives each reference the embedding it gets alone
    other = frames.flip(0)
    pair = invert_batch(wan, [other, frames], config, ["cd" * 32, "ab" * 32])
    assert torch.allclose(pair[1][0].tokens, emb.tokens, atol=1e-5)
    # batches sized from free memory by Wan's own transformer counted on the meta device: room for one at a time
    from mtcore.method.gpuplan import references_that_fit
    from mtcore.method.inversion import invert_fitting

    assert references_that_fit(wan.transformer, 9, 32, 32, 3, False, 4, free_bytes=1.0) == 1
    assert references_that_fit(wan.transformer, 9, 32, 32, 3, False, 4, free_bytes=1e12) > 2
    one_by_one = invert_fitting(wan, [other, frames], config, ["cd" * 32, "ab" * 32], free_bytes=1.0)
    assert torch.allclose(one_by_one[1][0].tokens, emb.tokens, atol=1e-5)


def test_frame_counts_off_the_4k_plus_1_grid_are_refused(wan):
    with pytest.raises(InputError, match=r"4k \+ 1 frames"):
        wan.resolve(InversionConfig(num_frames=8))
    r = mt("init-model", "unused", "--family", "wan-i2v", "--frames", 8)
    assert r.returncode == 2 and "4k + 1" in r.stderr


def test_an_unsupported_pipeline_class_is_refused_in_one_line(wan_dir, reference_video, tmp_path):
    from mtcore.method.models import load_model

    other = tmp_path / "cog"
    shutil.copytree(wan_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "CogVideoXImageToVideoPipeline"}))
    with pytest.raises(InputError) as err:
        load_model(other)
    assert "CogVideoXImageToVideoPipeline" in str(err.value) and "WanImageToVideoPipeline" in str(err.value)
    manifest = write_manifest(tmp_path, {"r": reference_video}, {"t": reference_video}, model=str(other))
    r = mt("run", manifest, "--out", tmp_path / "out")  # refused while planning: no Ray, no Prefect run
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "CogVideoXImageToVideoPipeline" in lines[0], r.stderr


def test_an_embedding_of_another_family_is_refused_with_exit_2(wan_dir, tiny_model_dir, reference_video, tmp_path):
    emb = tmp_path / "svd.safetensors"
    r = mt("invert", "--model", tiny_model_dir, "--reference", reference_video, "--out", emb, "--steps", 2)
    assert r.returncode == 0, r.stderr
    _image(1, 64).save(tmp_path / "t.png")
    r = mt("transfer", "--model", wan_dir, "--embedding", emb, "--target", tmp_path / "t.png", "--out", tmp_path / "o.mp4")
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "svd model" in lines[0] and "wan-i2v" in lines[0] and "Traceback" not in r.stderr


def test_load_embedding_names_both_families(wan, tmp_path):
    from mtcore.method.embedding import MotionEmbedding, load_embedding, save_embedding

    path = save_embedding(MotionEmbedding(torch.zeros(4, 2, 32), model_id=wan.model_id, family="wan-i2v",
                                          video_frames=9), tmp_path / "w.safetensors")
    assert load_embedding(path, family="wan-i2v").num_frames == 9
    with pytest.raises(EmbeddingMismatch, match="made for a wan-i2v model.*the loaded model is svd"):
        load_embedding(path, model_id="local:x", family="svd")


def test_mt_run_on_a_wan_folder_in_a_sweep_with_svd(prefect_harness, wan_dir, tiny_model_dir, media, tmp_path):
    """The whole pipeline with both families in one sweep: ok rows, each family's frame count and size, the family
    in the catalogs, the model's own CLIP metrics; a re-run computes nothing."""
    from flows.bulk import bulk_run
    from mtcore.data.catalog import read_table
    from mtcore.io.videoio import probe_video

    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png", "dog": media / "dog.png"},
                              models=[str(wan_dir), str(tiny_model_dir)])
    out = tmp_path / "out"
    first = bulk_run(str(manifest), out=str(out))
    assert (first.inversions_computed, first.transfers_computed, first.failed) == (2, 4, 0)
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    assert set(emb.status) == set(tr.status) == {"ok"}
    wan_rows = tr[tr.model_id.str.startswith("wan-i2v:local:")]
    assert len(wan_rows) == 2 and tr.model_id.str.startswith("local:").sum() == 2  # SVD's identity as before
    assert sorted(emb.num_frames) == [8, 9]
    for rel in tr.video_path:
        info = probe_video(out / rel)
        wan = rel in set(wan_rows.video_path)
        assert (info.num_frames, info.width, info.height) == ((9, 32, 32) if wan else (8, 64, 64))
    metrics = read_table(out, "metrics")
    assert len(metrics) == 4 and metrics.clip_first.notna().all()  # each model's own CLIP image encoder
    second = bulk_run(str(manifest), out=str(out))
    assert (second.inversions_computed, second.transfers_computed) == (0, 0)
    assert (second.inversions_cached, second.transfers_cached) == (2, 4)


def test_a_reference_caption_starts_a_wan_embedding_and_is_in_its_key(wan, wan_dir, tiny_model_dir, media, tmp_path):
    """A reference's `caption` label is the text a Wan embedding starts from, so it is in the embedding's key;
    SVD embeddings ignore it (their keys do not change), and a reference without one starts from ""."""
    import yaml

    from mtcore.data.manifest import load_manifest
    from mtcore.method.wan_inversion import initial_tokens
    from tasks.plan import plan_run

    def keys(caption):
        labels = {"labels": {"caption": caption}} if caption else {}
        doc = {"models": [str(wan_dir), str(tiny_model_dir)], "allow_outside": True, "seeds": [0],
               "references": [{"id": "r", "path": str(media / "right.mp4"), **labels}],
               "targets": [{"id": "t", "path": str(media / "cat.png")}]}
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
        plan = plan_run(load_manifest(tmp_path / "m.yaml"), str(tmp_path / "out"))
        return {job.model.model_id.split(":")[0]: (job.key, job.caption) for job in plan.inversions_todo}

    plain, walking, running = keys(None), keys("a person walks"), keys("a person runs")
    assert plain["wan-i2v"][1] is None and walking["wan-i2v"][1] == "a person walks"
    assert len({plain["wan-i2v"][0], walking["wan-i2v"][0], running["wan-i2v"][0]}) == 3
    assert plain["local"] == walking["local"] == running["local"]  # SVD: no caption, the same key
    config = InversionConfig(tokens_per_frame=4, init_noise=0.0)
    start = initial_tokens(wan.prompt_tokens("a person walks"), 4, config, torch.Generator())
    empty = initial_tokens(wan.prompt_tokens(""), 4, config, torch.Generator())
    assert start.shape == (4, 4, 32) and not torch.equal(start, empty) and torch.equal(start[0], start[2])
    assert torch.all(start[3] == 0)  # the shared group: zeros, which project as the padding (the stock context)
