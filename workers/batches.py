"""Where a training run's batches come from: whole tensors on the device (the fast path
for data that fits in memory), or a stream read by DataLoader workers.

Both kinds draw an epoch's order from the run's generator the same way (one randperm per
epoch), so a checkpoint's generator state makes a resumed epoch the same as in an
unbroken run, and both drop a trailing batch of one (batch norm cannot take it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler

from stagetune.workers.data import AnyDataset, Dataset, StreamingDataset, loader_workers

Batch = tuple[torch.Tensor, torch.Tensor]
PREFETCH = 2  # batches each worker reads ahead: memory is workers x PREFETCH x a batch


def steps_per_epoch(items: int, batch_size: int) -> int:
    return items // batch_size + (1 if items % batch_size > 1 else 0)


def batches_for(data: AnyDataset, batch_size: int, device: torch.device,
                workers: int | None = None) -> TensorBatches | StreamBatches:
    """The run's batches of `data` on `device`; `workers` overrides the DataLoader's."""
    if isinstance(data, StreamingDataset):
        return StreamBatches(data, batch_size, device, workers)
    return TensorBatches(data, batch_size, device)


class TensorBatches:
    """Whole tensors on the device; an epoch is a shuffled walk over index slices."""

    def __init__(self, data: Dataset, batch_size: int, device: torch.device,
                 eval_batch_size: int = 1024) -> None:
        self.x, self.y = data.x_train.to(device), data.y_train.to(device)
        self.x_val, self.y_val = data.x_val.to(device), data.y_val.to(device)
        self.size, self.batch_size, self.device = len(self.x), batch_size, device
        self.steps = steps_per_epoch(self.size, batch_size)
        self.eval_batch_size = eval_batch_size

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(self.size, generator=generator).to(self.device)
        bs = self.batch_size
        return ((self.x[idx], self.y[idx])
                for idx in (order[s * bs:(s + 1) * bs] for s in range(self.steps)))

    def validation(self) -> Iterator[Batch]:
        return slices(self.x_val, self.y_val, self.eval_batch_size)

    def close(self) -> None:
        """Nothing to release: the tensors go with the run."""


def slices(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))


class _Plan(Sampler[list[int]]):
    """The index batches of the pass about to start; set before each pass."""

    def __init__(self) -> None:
        self.order, self.batch_size, self.count = torch.zeros(0, dtype=torch.long), 1, 0

    def set(self, order: torch.Tensor, batch_size: int, count: int) -> None:
        self.order, self.batch_size, self.count = order, batch_size, count

    def __iter__(self) -> Iterator[list[int]]:
        order, bs = self.order, self.batch_size  # this pass's, whatever is set next
        return (order[s * bs:(s + 1) * bs].tolist() for s in range(self.count))

    def __len__(self) -> int:
        return self.count


class StreamBatches:
    """A stream through a DataLoader: workers decode items, pinned memory on CUDA, and the
    batch is normalised on the device (`StreamingDataset.prepare`).

    One persistent worker pool serves training and validation: the loader reads the two
    splits concatenated, and the plan says which indices the next pass takes.
    """

    def __init__(self, data: StreamingDataset, batch_size: int, device: torch.device,
                 workers: int | None = None) -> None:
        self.data, self.batch_size, self.device = data, batch_size, device
        self.size, self.val_size = data.train_size, data.val_size
        self.steps = steps_per_epoch(self.size, batch_size)
        self.workers = loader_workers(self.size, device) if workers is None else workers
        self._plan = _Plan()
        self._loader: DataLoader[Any] | None = DataLoader(
            ConcatDataset([data.train, data.val]), batch_sampler=self._plan,
            num_workers=self.workers, pin_memory=device.type == "cuda",
            persistent_workers=self.workers > 0,
            prefetch_factor=PREFETCH if self.workers else None,
            # Its own generator: the workers' seeds must not draw on torch's global RNG,
            # which a checkpoint restores for dropout and augmentation.
            generator=torch.Generator().manual_seed(0))

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        self._plan.set(torch.randperm(self.size, generator=generator), self.batch_size,
                       self.steps)
        return self._read()

    def validation(self) -> Iterator[Batch]:
        order = torch.arange(self.size, self.size + self.val_size)
        self._plan.set(order, self.batch_size, -(-self.val_size // self.batch_size))
        return self._read()

    def close(self) -> None:
        """End the worker processes now. Dropping the loader ends them (its iterator's
        __del__) even while a stray reference keeps this object alive: a stored
        exception's traceback holds the frames of the run that read it."""
        self._loader = None

    def _read(self) -> Iterator[Batch]:
        if self._loader is None:
            raise RuntimeError("these batches were closed; make new ones")
        blocking = self.device.type != "cuda"  # pinned memory copies asynchronously
        for x, y in self._loader:
            yield self.data.prepare(x.to(self.device, non_blocking=not blocking),
                                    y.to(self.device, non_blocking=not blocking))
