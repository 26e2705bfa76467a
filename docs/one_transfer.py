"""Draw the README's picture of one transfer: the reference's frames, the target image, the output's frames.

    .venv/bin/mt run manifests/demo.yaml --out mt-out
    .venv/bin/python docs/one_transfer.py --out mt-out --reference slide_right --target cat --png docs/one-transfer.png

Reads the run's catalogs (the first ok transfer of that pair), the manifest's media, and the video
in the store; frames are enlarged (nearest neighbour) so that 16-px videos can be seen.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from mtcore.data.catalog import read_table
from mtcore.data.manifest import load_manifest
from mtcore.io.frames import signed_to_uint8
from mtcore.io.storage import storage
from mtcore.io.videoio import read_frames, read_image, read_video

GAP, LABEL = 6, 18  # px between frames / height of a row's label


def strip(frames: np.ndarray, scale: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> one (H*scale, F*(W*scale+GAP), 3) row of enlarged frames on white."""
    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    pad = np.full((big.shape[1], GAP, 3), 255, np.uint8)
    return np.concatenate([np.concatenate([f, pad], axis=1) for f in big], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default="manifests/demo.yaml")
    parser.add_argument("--out", default="mt-out")
    parser.add_argument("--reference", default="slide_right")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--png", default="docs/one-transfer.png")
    parser.add_argument("--scale", type=int, default=6)
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    rows = read_table(args.out, "transfers")
    rows = rows[(rows.status == "ok") & (rows.reference_id == args.reference) & (rows.target_id == args.target)]
    if rows.empty:
        raise SystemExit(f"{args.out}: no ok transfer of {args.reference} x {args.target}: run the manifest first")
    with storage(args.out).reading(rows.video_path.iloc[0]) as path:
        output = read_frames(path)
    f, h, w = output.shape[:3]
    reference = next(r for r in manifest.references if r.id == args.reference)
    target = next(t for t in manifest.targets if t.id == args.target)
    ref_frames = signed_to_uint8(read_video(reference.path, f, h, w))
    target_image = np.asarray(read_image(target.path, h, w))

    parts = [(f"reference video: {args.reference}", strip(ref_frames, args.scale)),
             (f"target image: {args.target}", strip(target_image[None], args.scale)),
             (f"output: {args.target} moving like {args.reference}", strip(output, args.scale))]
    width = max(p.shape[1] for _, p in parts)
    height = sum(p.shape[0] + LABEL + GAP for _, p in parts)
    canvas = Image.new("RGB", (width, height), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for label, pixels in parts:
        draw.text((0, y + 3), label, fill="black")
        canvas.paste(Image.fromarray(pixels), (0, y + LABEL))
        y += pixels.shape[0] + LABEL + GAP
    canvas.save(args.png)
    print(f"wrote {args.png} ({width}x{height} px)")


if __name__ == "__main__":
    main()
