"""Checking a manifest's media one by one (`mt validate`): problems of single items, which fail only
their own rows in a run."""

from __future__ import annotations

from mtcore.errors import InputError
from mtcore.data.manifest import Manifest


def check_media(manifest: Manifest) -> dict[str, str]:
    """Problems of single items: {"reference:<id>" | "target:<id>": one-line problem}; empty if all readable."""
    # Imported here: videoio pulls in torch and ffmpeg, which validating a manifest does not need.
    from mtcore.io.storage import local_copy
    from mtcore.io.videoio import probe_video, read_image

    problems = {}
    for kind, items, check in (("reference", manifest.references, probe_video),
                               ("target", manifest.targets, read_image)):
        for item in items:
            try:
                with local_copy(item.path) as path:
                    check(path)
            except InputError as exc:
                problems[f"{kind}:{item.id}"] = str(exc).splitlines()[0]
    return problems


__all__ = ["check_media"]
