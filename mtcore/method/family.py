"""Model families: what inversion, transfer, the pipeline and the catalogs need of a model, written once.

A family is one kind of diffusers image-to-video pipeline. Which one a folder holds is found, not
configured: its `model_index.json` names the pipeline class (`_class_name`), and `FAMILIES` maps that
class to the family. A folder of any other class is refused in one line naming its class and the
supported ones. Light on purpose (no torch): planning a run reads the family without the ML stack.

Every loaded model (`mtcore.method.models.load_model`) satisfies `MotionModel`; inversion, transfer,
the workers and the CLI use only this interface, so a new family is one module implementing it plus
one line in `FAMILIES` (see docs/method.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Protocol

from mtcore.errors import InputError

SVD = "svd"
WAN_I2V = "wan-i2v"

FAMILIES = {
    "StableVideoDiffusionPipeline": SVD,
    "WanImageToVideoPipeline": WAN_I2V,
}
"""model_index.json `_class_name` -> family name (the name `mt init-model --family` and the catalogs use)."""


def family_of_class(class_name: str, where: object) -> str:
    """The family of a pipeline class, or InputError naming the class and the supported ones."""
    family = FAMILIES.get(class_name)
    if family is None:
        supported = ", ".join(f"{cls} ({name})" for cls, name in FAMILIES.items())
        raise InputError(where, f"pipeline class {class_name!r} is not supported; supported: {supported}")
    return family


def family_of_folder(folder: str | os.PathLike) -> str:
    """The family of a local pipeline folder, read from its model_index.json."""
    index = Path(folder) / "model_index.json"
    try:
        class_name = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(index, f"unreadable model_index.json ({str(exc).splitlines()[0][:120]})") from None
    return family_of_class(str(class_name), Path(folder))


def identity_prefix(family: str) -> str:
    """What a family adds in front of a model identity: nothing for SVD (its keys predate families), else
    "<family>:" so keys and catalogs of other families name theirs."""
    return "" if family == SVD else f"{family}:"


def family_of_identity(model_id: str) -> str:
    """The family a model identity names (its prefix); SVD for an identity without one (SVD's, and hub ids,
    whose family is known only once the model is fetched)."""
    for family in FAMILIES.values():
        if family != SVD and model_id.startswith(identity_prefix(family)):
            return family
    return SVD


def latent_frames(num_frames: int, temporal: int = 4) -> int:
    """F' of a Wan video of F frames: its VAE compresses time `temporal`x, keeping the first frame (4k + 1 -> k + 1)."""
    return (num_frames - 1) // temporal + 1


def groups_for(family: str, num_frames: int) -> int:
    """G, the token groups of an embedding for F frames: SVD F + 1; Wan one per latent frame plus one shared."""
    return latent_frames(num_frames) + 1 if family == WAN_I2V else num_frames + 1


CAPTION_LABEL = "caption"
"""The reference label a Wan embedding starts from (the encoded text, in place of the empty prompt)."""


ProgressFn = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)
StepFn = Callable[[int, int], None]  # (step done, total steps)


class MotionModel(Protocol):
    """A frozen image-to-video model with motion routing installed: the one interface of the method.

    Loading: `mtcore.method.models.load_model` (from_pretrained on a local folder, a hub id + revision, or
    a bucket); identity: `model_id`, which names the family for every family but SVD.
    """

    family: str
    """"svd" or "wan-i2v" (FAMILIES)."""
    model_id: str
    """Identity recorded in embeddings, keys and catalogs."""
    device: Any
    dtype: Any

    @property
    def token_dim(self) -> int:
        """D: width of a motion-embedding token."""

    @property
    def default_num_frames(self) -> int:
        """Frames of a video when the config leaves them unset."""

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) when the config leaves them unset."""

    def resolve(self, cfg, num_frames: int | None = None):
        """`cfg` with unset frames and size filled in; a frame count or size this family cannot make is refused."""

    def embedding_groups(self, num_frames: int) -> int:
        """G: token groups of an embedding for F video frames (SVD: F + 1; Wan: latent frames + 1)."""

    def route(self, groups: int, tokens_per_group: int) -> Any:
        """A context in which denoiser calls read G x N-token embeddings as motion embeddings (the routing)."""

    def encode_reference(self, frames: Any, config, generator: Any, caption: str | None = None) -> Any:
        """A reference's frozen inputs (frames (F, 3, H, W) in [-1, 1]) and its starting tokens `.tokens`
        (G, N, D), the init noise drawn from `generator`; `caption`: the text it starts from (Wan)."""

    def draw(self, reference: Any, batch: int, config, generator: Any) -> Any:
        """One inversion step's noise for one reference (noise levels and noise), from its generator."""

    def errors(self, references: list, draws: list, tokens: Any, config, autocast: Any) -> Any:
        """(k*b,) the family's training loss at the drawn noise levels: reference i's b draws, tokens (k*b, G, N, D)."""

    def eval_draws(self, reference: Any, count: int, config) -> list:
        """Fixed draws from seed + 1: the yardstick of the loss before and after."""

    def eval_loss(self, reference: Any, tokens: Any, draws: list, config) -> float:
        """The loss of tokens (G, N, D) over fixed draws."""

    def sample(self, images: list, embedding, config, seeds: list[int], progress: StepFn | None,
               guidance_passes: int) -> Any:
        """Videos (B, F, 3, H, W) in [0, 1] of target images moved by `embedding` (None = the stock model)."""

    def image_embeddings(self, images: list) -> Any:
        """(B, D') image embeddings of the model's own image encoder (the appearance metrics), or None."""

    def invertible_modules(self) -> list:
        """The denoisers whose activations an inversion step keeps (memory levers act on these)."""


__all__ = ["SVD", "WAN_I2V", "FAMILIES", "CAPTION_LABEL", "MotionModel", "family_of_class", "family_of_folder",
           "family_of_identity", "groups_for", "identity_prefix", "latent_frames"]
