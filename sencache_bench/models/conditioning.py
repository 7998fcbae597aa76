"""The conditioning image of an image-to-video spec (``sampling.image``): read once, identified by its pixels.

One image applies to every prompt of a spec: an I2V benchmark varies the prompt and seed over a fixed first frame
(as bench-t2v's first frames serve), and one spec field keeps ``prompts`` as it is for every model. The reference
key takes the SHA-256 of the decoded RGB pixels and size, not the path: a renamed copy reuses its references, an
edited file with the same name does not.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpecError
from .base import ModelEntry


@dataclass(frozen=True)
class ConditioningImage:
    path: Path
    sha256: str
    size: tuple[int, int]  # (width, height)
    _pixels: object = field(default=None, repr=False, compare=False)  # the PIL RGB image

    def pil(self):
        return self._pixels


def load_image(value: str, search: list[Path]) -> ConditioningImage:
    """``sampling.image`` as a decoded RGB image, or one SpecError line (missing, a directory, not an image)."""
    from PIL import Image, UnidentifiedImageError

    given = Path(value).expanduser()
    candidates = [given] if given.is_absolute() else [d / given for d in search]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        kind = "is a directory" if any(c.is_dir() for c in candidates) else "not found"
        raise SpecError(f"sampling.image: {value} {kind}; give the path of a PNG or JPEG "
                        f"(e.g. `python -m sencache_bench.models.first_frames DIR`)")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        why = "not an image PIL can read" if isinstance(err, UnidentifiedImageError) else str(err).splitlines()[0]
        raise SpecError(f"sampling.image: {path}: {why}; give a PNG or JPEG") from None
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
    return ConditioningImage(path=path, sha256=digest, size=(rgb.width, rgb.height), _pixels=rgb)


def takes_image(family) -> bool:
    """Whether the family's pipeline call takes ``image`` (an image-to-video pipeline)."""
    return "image" in inspect.signature(family.pipeline_cls().__call__).parameters


def entry_for_image(entry: ModelEntry | None, model_name: str, has_image: bool, family=None) -> ModelEntry | None:
    """The entry that runs: an I2V-only model needs an image, a text-to-video model with an image variant switches
    to it, any other model takes no image (one SpecError line each). An unregistered pipeline (a directory or hub
    id, ``family`` read from it) takes an image when its pipeline call does, and then needs one."""
    if entry is None:
        i2v = family is not None and takes_image(family)
        if has_image and not i2v:
            raise SpecError(f"sampling.image: {model_name} is not an image-to-video pipeline; use one whose "
                            f"`sencache-bench models` row takes an image, or a directory holding one")
        if i2v and not has_image:
            raise SpecError(f"sampling.image: required: {model_name} holds a {family.pipeline_class} "
                            f"(image-to-video); give the path of the first frame")
        return None
    if entry.image == "required":
        if not has_image:
            raise SpecError(f"sampling.image: required: {entry.name} is image-to-video; give the path of the "
                            f"first frame (e.g. `python -m sencache_bench.models.first_frames DIR`)")
        return entry
    if not has_image:
        return entry
    if not entry.image_variant:
        raise SpecError(f"sampling.image: {entry.name} takes no image (text-to-video only); remove sampling.image "
                        f"or use an image-to-video model")
    module, _, attr = entry.image_variant.partition(":")
    return getattr(importlib.import_module(module), attr)
