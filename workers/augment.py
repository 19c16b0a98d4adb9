"""Image augmentation on batches of normalised tensors, through torchvision.transforms.v2.

The built-in augmentations run in a fixed order (randaugment, flip, crop, cutout); a
user's own, registered with `register_augmentation`, run after them in the order the
`augment` knob names them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from stagetune.workers.config import AUGMENT_PLUGINS
from stagetune.workers.data import AnyDataset
from stagetune.workers.errors import ConfigError

Augmenter = Callable[[torch.Tensor], torch.Tensor]
register_augmentation = AUGMENT_PLUGINS.register


def build_augmenter(augmentations: tuple[str, ...], data: AnyDataset) -> Augmenter | None:
    """A per-sample augmentation for training batches, or None when there is none."""
    if not augmentations:
        return None
    if not data.is_image:
        raise ConfigError(f"augment applies to image datasets; {data.name} is not one (use 'none')")
    size = data.input_shape[1:]
    geometric: list[v2.Transform] = []
    if "flip" in augmentations:
        geometric.append(v2.RandomHorizontalFlip())
    if "crop" in augmentations:
        geometric.append(v2.RandomCrop(size, padding=max(1, size[-1] // 8)))
    geometric_t = v2.Compose(geometric) if geometric else None
    randaugment = v2.RandAugment() if "randaugment" in augmentations else None
    cutout = v2.RandomErasing(p=0.5, scale=(0.02, 0.2)) if "cutout" in augmentations else None
    own = [AUGMENT_PLUGINS.get(name)(data) for name in augmentations if name in AUGMENT_PLUGINS]
    mean, std = data.mean, data.std

    def augment(batch: torch.Tensor) -> torch.Tensor:
        out = []
        for x in batch:  # v2 transforms draw one random choice per call: go per sample
            if randaugment is not None:  # RandAugment works on uint8 pixels
                pixels = ((x * std.to(x.device) + mean.to(x.device)) * 255).clamp(0, 255)
                x = (randaugment(pixels.to(torch.uint8)).float() / 255 - mean.to(x.device))
                x = x / std.to(x.device)
            if geometric_t is not None:
                x = geometric_t(x)
            if cutout is not None:
                x = cutout(x)
            for transform in own:
                x = transform(x)
            out.append(x)
        return torch.stack(out)

    return augment
