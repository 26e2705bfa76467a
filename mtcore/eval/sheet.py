"""Contact sheets: one PNG with a row of frames per video, for people to look at a run's output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mtcore.data.catalog import read_table
from mtcore.errors import InputError
from mtcore.io.storage import is_url, local_copy, normalize, storage, writing_to
from mtcore.io.frames import signed_to_uint8
from mtcore.io.videoio import read_frames, read_video


def save_contact_sheet(videos: list[np.ndarray], path: str | os.PathLike, scale: int = 1) -> Path | str:
    """One PNG with a row of frames per video ((F, H, W, 3) uint8 each), 2 white px between rows.

    `scale` enlarges every frame (nearest neighbour) so tiny videos can be seen.
    """
    if scale > 1:
        videos = [v.repeat(scale, axis=1).repeat(scale, axis=2) for v in videos]
    rows = [np.concatenate(list(v), axis=1) for v in videos]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    location = normalize(path)
    with writing_to(location) as tmp:
        sheet.save(tmp, format="PNG")
    return location if is_url(location) else Path(location)


def run_contact_sheet(out: str | os.PathLike, png: str | os.PathLike, references: dict[str, Path | str] | None = None,
                      scale: int = 0, limit: int = 40) -> list[str]:
    """A contact sheet of a run's finished transfers, grouped by reference; returns the row labels.

    With `references` ({reference id: video path}), each group starts with the reference's own
    frames at the videos' size. `scale` 0 enlarges frames to about 64 px high.
    """
    out = normalize(out)
    store = storage(out)
    transfers = read_table(out, "transfers")
    transfers = transfers[transfers.status == "ok"].drop_duplicates("transfer_key")
    transfers = transfers.sort_values(["reference_id", "target_id", "seed"])
    if transfers.empty:
        raise InputError(out, "no finished transfers in the catalog")
    rows, labels = [], []
    for reference_id, group in transfers.groupby("reference_id", sort=True):
        videos = []
        for rel in group.video_path[:limit]:
            with store.reading(rel) as path:
                videos.append(read_frames(path))
        if references and reference_id in references:
            f, h, w = videos[0].shape[:3]
            with local_copy(references[reference_id]) as path:
                rows.append(signed_to_uint8(read_video(path, f, h, w)))
            labels.append(f"{reference_id} (reference)")
        rows += videos
        labels += [f"{reference_id} -> {t} (seed {s})" for t, s in zip(group.target_id, group.seed)]
    save_contact_sheet(rows[:limit], png, scale=scale or max(1, 64 // rows[0].shape[1]))
    return labels[:limit]


__all__ = ["save_contact_sheet", "run_contact_sheet"]
