"""A streamed image folder made from real images: Fashion-MNIST written out as PNG files.

The first load writes a class-per-subfolder tree of PNGs into the data folder; every load
then hands it to the built-in `image_folder`, which streams it (a PNG decoded per item
by DataLoader workers), as it would any folder of photographs a user brings.
`stream: false` loads the same folder as whole tensors instead, for comparison.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torchvision.datasets import FashionMNIST
from torchvision.io import write_png

from stagetune.workers.data import DATASETS, DataSettings, RawData, StreamData, register_dataset


class PngKnobs(BaseModel):
    """How big a folder to write, and the size the images are streamed at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_class: int = Field(240, ge=10, le=6000, description="PNG files per class (10 classes)")
    image_size: int = Field(28, ge=8, le=64, description="side the images are resized to")
    stream: bool = Field(True, description="false: load every image up front as whole "
                         "tensors (to compare memory and speed)")


def png_folder(settings: DataSettings, per_class: int) -> str:
    """The folder (relative to the data folder) of `per_class` Fashion-MNIST PNGs per class,
    written on first use: a seeded sample of the training split, never the test split."""
    relative = f"fashion_png/{per_class}_per_class"
    target = settings.data_dir / relative
    if target.is_dir():
        return relative
    images, labels = _fashion_mnist(settings)
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                             for c in range(len(FashionMNIST.classes))])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Trials of one study load it in several processes at once: each writes its own copy
    # and renames it into place; the first rename wins, the rest are thrown away.
    scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=target.parent))
    for name in FashionMNIST.classes:
        (scratch / _folder_name(name)).mkdir()
    for i in picked:
        name = _folder_name(FashionMNIST.classes[int(labels[i])])
        write_png(images[i][None], str(scratch / name / f"{i:05d}.png"))
    try:
        os.rename(scratch, target)
    except OSError:  # another process got there first
        shutil.rmtree(scratch, ignore_errors=True)
    return relative


def _fashion_mnist(settings: DataSettings) -> tuple[torch.Tensor, np.ndarray]:
    """Fashion-MNIST's training images as uint8 (N, 28, 28), through the built-in loader
    (the data folder, else Debian's dataset-fashion-mnist)."""
    raw = DATASETS.get("fashion_mnist")(settings=settings)
    assert isinstance(raw, RawData)  # the built-in returns whole arrays
    pixels = torch.from_numpy(np.rint(raw.x[:, 0] * 255)).to(torch.uint8)
    return pixels, np.asarray(raw.y)


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()  # "T-shirt/top" -> "t_shirt_top"


@register_dataset("fashion_png", knobs=PngKnobs)
def fashion_png(*, settings: DataSettings, per_class: int = 240, image_size: int = 28,
                stream: bool = True) -> StreamData | RawData:
    """Fashion-MNIST as a folder of PNG files in the data folder, streamed by image_folder."""
    path = png_folder(settings, per_class)
    return DATASETS.get("image_folder")(settings=settings, path=path, image_size=image_size,
                                        stream=stream)
