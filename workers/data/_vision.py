"""Image datasets: mnist1d (generated), Fashion-MNIST (Debian package), torchvision's."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvdatasets
from torchvision.datasets.utils import extract_archive
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from stagetune.workers.data._base import RawData
from stagetune.workers.data._registry import register_dataset
from stagetune.workers.data._settings import DataSettings, data_folder
from stagetune.workers.data._stream import StreamData
from stagetune.workers.errors import ConfigError, DataNotFoundError

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_DECODED = (".jpg", ".jpeg", ".png", ".webp", ".gif")  # what torchvision.io decodes


@register_dataset("mnist1d")
def mnist1d(*, settings: DataSettings, samples: int = 5000, seed: int = 42) -> RawData:
    """MNIST-1D sequences of length 40, generated offline by the mnist1d package."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed
    data = make_dataset(args)  # generates; never downloads
    x = np.concatenate([data["x"], data["x_test"]])[:, None, :]
    y = np.concatenate([data["y"], data["y_test"]])
    return RawData(x, y, "classification", is_image=False)


@register_dataset("fashion_mnist")
def fashion_mnist(*, settings: DataSettings) -> RawData:
    """Fashion-MNIST from the data folder, or from Debian's dataset-fashion-mnist."""
    root = settings.data_dir
    raw_dir = root / "FashionMNIST" / "raw"
    if not all((raw_dir / f).exists() for f in _IDX_FILES):
        _extract_idx(settings.fashion_mnist_system_dir, raw_dir, "Fashion-MNIST", hint=(
            "install it with 'apt-get install dataset-fashion-mnist', or put the four "
            "*-ubyte(.gz) files in FashionMNIST/raw in the data folder"
        ), where="Debian's dataset-fashion-mnist folder")
    return _torchvision_mnist(tvdatasets.FashionMNIST, root)


@register_dataset("mnist")
def mnist(*, settings: DataSettings) -> RawData:
    """MNIST from the data folder (torchvision layout), downloaded only if allowed."""
    root = settings.data_dir
    raw_dir = root / "MNIST" / "raw"
    if not all((raw_dir / f).exists() for f in _IDX_FILES):
        if settings.allow_download:
            tvdatasets.MNIST(str(root), download=True)
        else:
            _extract_idx(raw_dir, raw_dir, "MNIST", hint=_download_hint("MNIST/raw"),
                         where="MNIST/raw in the data folder")
    return _torchvision_mnist(tvdatasets.MNIST, root)


@register_dataset("cifar10")
def cifar10(*, settings: DataSettings) -> RawData:
    """CIFAR-10 from the data folder (torchvision layout), downloaded only if allowed."""
    return _cifar(tvdatasets.CIFAR10, "cifar-10-batches-py", settings)


@register_dataset("cifar100")
def cifar100(*, settings: DataSettings) -> RawData:
    """CIFAR-100 from the data folder (torchvision layout), downloaded only if allowed."""
    return _cifar(tvdatasets.CIFAR100, "cifar-100-python", settings)


def check_image_folder(settings: DataSettings, path: str = "", **_: Any) -> list[tuple[str, str]]:
    """A folder inside the data folder with at least two class subfolders; outside it or
    absent, one message that reveals nothing of the server's files."""
    try:
        folder = data_folder(path, "image_folder", settings)
    except ConfigError as exc:
        return [("path", f"{exc}, with one subfolder per class")]
    if sum(1 for child in folder.iterdir() if child.is_dir()) < 2:
        return [("path", f"image_folder: {path!r} needs at least two class subfolders")]
    return []


@register_dataset("image_folder", check=check_image_folder)
def image_folder(*, settings: DataSettings, path: str = "", image_size: int = 32,
                 stream: bool = True) -> RawData | StreamData:
    """A class-per-subfolder tree of images inside the data folder, resized to a square.

    Streamed (the default), an image is decoded (torchvision.io) and resized only when a
    batch needs it and stays uint8 until that batch is on the device, so any number of
    images trains in bounded memory. `stream: false` loads them all up front as whole
    tensors: the fast path for a folder that fits in memory.
    """
    folder = data_folder(path, "image_folder", settings)  # `check_image_folder` said why not
    if not 4 <= image_size <= 1024:
        raise ConfigError(f"image_folder: image_size must lie in [4, 1024] (got {image_size})")
    data = tvdatasets.ImageFolder(str(folder), loader=_read_rgb,
                                  transform=v2.Resize((image_size, image_size), antialias=True))
    if len(data.classes) < 2:
        raise ConfigError(f"image_folder: {path!r} needs at least two class subfolders")
    if stream:
        return StreamData(data, task="classification", num_classes=len(data.classes),
                          is_image=True)
    x = torch.stack([img for img, _ in data]).numpy() * np.float32(1 / 255)
    return RawData(x, np.array(data.targets), "classification", is_image=True)


def _read_rgb(path: str) -> torch.Tensor:
    """An image file as uint8 (3, H, W): torchvision.io's decoders where they apply (the
    same pixels as PIL's), PIL for the formats they lack (BMP, TIFF, PPM, ...)."""
    if path.lower().endswith(_DECODED):
        with warnings.catch_warnings():  # 0.29 points to torchcodec, which is not installed
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(path, mode=ImageReadMode.RGB)
    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB"))


def _torchvision_mnist(cls: type[tvdatasets.MNIST], root: Path) -> RawData:
    # The official test split stays untouched: validation is carved from training data.
    train = cls(str(root), train=True)
    x = train.data.numpy()[:, None] * np.float32(1 / 255)
    return RawData(x, train.targets.numpy(), "classification", is_image=True)


def _extract_idx(source: Path, raw_dir: Path, label: str, hint: str, where: str) -> None:
    """Unpack the four .gz idx files into torchvision's raw folder (what its download does);
    `where` names `source` without the server's folders, for the message."""
    archives = [source / f"{f}.gz" for f in _IDX_FILES]
    if not all(a.exists() for a in archives):
        raise DataNotFoundError(f"{label} files not found in {where}: {hint}")
    raw_dir.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        extract_archive(str(archive), str(raw_dir))


def _cifar(cls: type[tvdatasets.CIFAR10], folder: str, settings: DataSettings) -> RawData:
    root = settings.data_dir
    if not (root / folder).exists() and not settings.allow_download:
        raise DataNotFoundError(f"{cls.__name__} not found: {_download_hint(folder)}")
    try:
        train = cls(str(root), train=True, download=settings.allow_download)
    except RuntimeError as exc:  # torchvision's 'not found or corrupted'
        raise DataNotFoundError(f"{cls.__name__}: {exc} {_download_hint(folder)}") from None
    x = train.data.transpose(0, 3, 1, 2) * np.float32(1 / 255)
    return RawData(x, np.array(train.targets), "classification", is_image=True)


def _download_hint(where: str) -> str:
    """`where`: a folder relative to the data folder (messages name no server path)."""
    return (
        f"put the files under {where} in the data folder (torchvision's layout), or set "
        "STAGETUNE_ALLOW_DOWNLOAD=true on a machine with network access"
    )
