"""Streamed datasets: map-style torch Datasets trained through DataLoader workers, resumed
from checkpoints, probed and baselined on a sample, in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import Dataset as TorchDataset

from stagetune.workers import Task, TrialRequest, execute
from stagetune.workers.batches import StreamBatches, batches_for
from stagetune.workers.data import (
    DATASETS,
    Dataset,
    DataSettings,
    StreamData,
    StreamingDataset,
    get_data_settings,
    load_dataset,
    register_dataset,
)
from stagetune.workers.errors import ConfigError

PER_CLASS = 40  # 400 PNGs: enough for a split, cheap to decode
DIGITS = load_digits()


class DigitItems(TorchDataset):
    """scikit-learn's digits as uint8 (1, 8, 8) images, one item at a time, no `targets`:
    the label facts must come from the sample."""

    def __len__(self) -> int:
        return len(DIGITS.target)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = DIGITS.images[i] * (255 / 16)
        return torch.from_numpy(pixels.astype(np.uint8))[None], int(DIGITS.target[i])


class NoiseItems(TorchDataset):
    """A large stream made on the fly: 3x32x32 uint8 noise, label i % 10."""

    def __init__(self, size: int) -> None:
        self.size, self.targets = size, [i % 10 for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(i)
        return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen), i % 10


if "digits_stream" not in DATASETS:

    @register_dataset("digits_stream")
    def digits_stream(*, settings: DataSettings) -> StreamData:
        return StreamData(DigitItems(), task="classification", num_classes=10, is_image=True)

    @register_dataset("noise_stream")
    def noise_stream(*, settings: DataSettings, size: int = 100_000) -> StreamData:
        return StreamData(NoiseItems(size), is_image=True)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data folder with `pngs/<digit>/<i>.png` from scikit-learn's digits, made the data
    folder of this process (as STAGETUNE_DATA_DIR would) for the module's tests."""
    root = tmp_path_factory.mktemp("data")
    for c in range(10):
        (root / "pngs" / str(c)).mkdir(parents=True)
        images = DIGITS.images[DIGITS.target == c][:PER_CLASS]
        for i, pixels in enumerate(images):
            Image.fromarray((pixels * (255 / 16)).astype(np.uint8)).save(root / "pngs" / str(c) / f"{i}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGETUNE_DATA_DIR", str(root))
        get_data_settings.cache_clear()
        yield root
    get_data_settings.cache_clear()


PNGS = Task("image_folder", "convnet", dataset_options={"path": "pngs", "image_size": 8})
PARAMS = {"batch_size": 32, "lr": 0.01, "optimizer": "adamw", "dropout": 0.1,
          "augment": "flip"}  # dropout and augmentation draw on torch's RNG, across resume
TIMING = ("epoch_seconds", "samples_per_second")


def without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def test_a_streamed_folder_has_the_facts_of_the_same_folder_loaded_whole(png_folder: Path) -> None:
    streamed = load_dataset("image_folder", PNGS.dataset_options)
    whole = load_dataset("image_folder", {**PNGS.dataset_options, "stream": False})
    assert isinstance(streamed, StreamingDataset) and isinstance(whole, Dataset)
    assert (streamed.train_size, streamed.val_size) == (whole.train_size, whole.val_size)
    assert streamed.input_shape == whole.input_shape == (3, 8, 8)
    assert streamed.num_classes == whole.num_classes == 10
    # Every label is known from ImageFolder's targets, and the split is the same partition.
    assert streamed.label_prior == pytest.approx(whole.label_prior)
    assert streamed.expected_initial_loss == pytest.approx(whole.expected_initial_loss)
    # Statistics from a sample of up to 1,000 items: here every training item.
    assert torch.allclose(streamed.mean, whole.mean, atol=1e-4)
    assert torch.allclose(streamed.std, whole.std, atol=1e-3)
    x, y = streamed.sample("val")
    assert x.dtype == torch.float32 and x.shape == whole.x_val.shape
    assert sorted(y.tolist()) == sorted(whole.y_val.tolist())
    assert float(x.sum()) == pytest.approx(float(whole.x_val.sum()), abs=0.5)
    assert streamed.train[0][0].dtype == torch.uint8  # items stay uint8 until the batch


def test_stream_split_options_work_by_index(png_folder: Path) -> None:
    data = load_dataset("image_folder", {**PNGS.dataset_options, "classes": [3, 5],
                                         "subset": 30})
    assert data.num_classes == 2 and data.train_size == 30 and data.val_size == 16
    assert set(data.sample("train")[1].tolist()) == {0, 1}
    with pytest.raises(ConfigError, match="'classes' needs a classification stream"):
        load_dataset("digits_stream", {"classes": [1, 2]})  # no `targets` to select by


def test_a_stream_trains_through_dataloader_workers_and_resumes_alike(png_folder: Path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    data = load_dataset("image_folder", PNGS.dataset_options)
    batches = batches_for(data, 32, torch.device("cpu"))
    assert isinstance(batches, StreamBatches) and batches.workers >= 1
    del batches
    straight = execute(TrialRequest(PNGS, params=PARAMS, epochs=3))
    saved: dict[int, bytes] = {}
    first = execute(TrialRequest(PNGS, params=PARAMS, epochs=1, horizon=3, checkpoint_at=(1,)),
                    save=lambda epoch, blob: saved.__setitem__(epoch, blob))
    resumed = execute(TrialRequest(PNGS, params=PARAMS, epochs=3, resume=saved[1]))

    assert straight.status == "completed" and [m["epoch"] for m in straight.history] == [1, 2, 3]
    assert straight.history[-1]["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert {"train_loss", "val_loss", "val_accuracy", "samples_per_second"} <= set(straight.history[0])
    assert resumed.start_epoch == 1 and [m["epoch"] for m in resumed.history] == [2, 3]
    assert without_timing(first.history + resumed.history) == without_timing(straight.history)
    # The DataLoader's worker processes end with the run.
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, [(p.pid, p.status(), p.cmdline()) for p in left]


@pytest.mark.parametrize("mode", ["init_check", "overfit", "lr_probe", "baseline"])
def test_probes_and_baseline_run_on_a_sample_of_the_stream(mode: str) -> None:
    result = execute(TrialRequest(Task("digits_stream", "convnet"), mode=mode,
                                  options={"iterations": 30} if mode == "lr_probe" else {}))
    assert result.status == "passed", result.message
    if mode == "baseline":
        assert result.final["val_accuracy"] > 0.9


def test_label_facts_of_a_stream_without_targets_come_from_its_sample() -> None:
    data = load_dataset("digits_stream")
    assert data.num_classes == 10 and len(data.y_train) == 1000  # the sample's labels
    assert sum(data.label_prior) == pytest.approx(1.0)
    assert max(data.label_prior) < 0.15  # digits are balanced
    x, y = data.sample("train", 64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.long
    assert abs(float(x.mean())) < 0.3  # normalised


@pytest.mark.slow
def test_a_large_stream_loads_and_trains_in_bounded_memory() -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    data = load_dataset("noise_stream")  # 80,000 training items: 0.98 GB as float32 tensors
    loaded = process.memory_info().rss
    batches = batches_for(data, 256, torch.device("cpu"), workers=1)
    peak, steps = loaded, 0
    for epoch in range(2):  # 600 batches: 1.8 GB streamed, nearly twice the whole tensors
        for step, (x, _) in enumerate(batches.epoch(torch.Generator().manual_seed(epoch))):
            assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32
            peak, steps = max(peak, process.memory_info().rss), steps + 1
            if step == 299:
                break
    # Loading reads only a sample; then memory levels off (the allocator keeps some
    # hundreds of MiB of freed batches) instead of growing with what was streamed.
    assert loaded - before < 300 * 2**20, f"loading took {(loaded - before) / 2**20:.0f} MiB"
    assert steps == 600
    assert peak - loaded < 512 * 2**20, (f"RSS grew by {(peak - loaded) / 2**20:.0f} MiB over "
                                         f"{steps} batches of 3 MiB")
