"""Seeding and device choice: the two things every run does first."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from stagetune.workers.gpu_check import require_cuda


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | None = None) -> torch.device:
    """The device asked for, else CUDA (the GPU Ray assigned, if any), else the CPU. A CUDA
    device asked for by name that torch cannot use fails here (`require_cuda`), with why."""
    if name:
        device = torch.device(name)
        if device.type == "cuda":
            require_cuda()
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trial_device(asked: str | None, gpu_ids: Sequence[object], host: str | None = None) -> str:
    """The device a Ray trial runs on: the one its request names, else CUDA where Ray gave
    it GPUs (`gpu_ids`), else the CPU. GPUs that torch cannot use fail the trial here, before
    it loads anything, naming `host` (default: this machine's name): never a run on the
    CPU while it holds a GPU."""
    device = asked or ("cuda" if gpu_ids else "cpu")
    if torch.device(device).type == "cuda":
        require_cuda(gpu_ids, host)
    return device
