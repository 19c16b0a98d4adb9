"""Whether torch can use the GPUs a trial was given. Where it cannot (no driver, a driver too
old for torch's CUDA build, a torch built without CUDA, no device visible), the trial fails
before training with one sentence that says why and what to do: a trial that holds a GPU
and trains on the CPU instead would be slow, and would say nothing."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stagetune.workers.errors import StagetuneError

CONTAINER = ("install the NVIDIA driver and the NVIDIA Container Toolkit on that host and start "
             "the worker's container with its GPUs (docker run --gpus all, or the compose "
             "file's deploy.resources.reservations.devices)")


class GpuUnavailableError(StagetuneError):
    """A trial was given GPUs (or asked for CUDA) that torch cannot use here."""


@dataclass(frozen=True)
class CudaState:
    """What torch says about CUDA in this process, where it cannot use it."""

    torch_version: str
    cuda_build: str | None  # torch.version.cuda: None for a CPU (or ROCm) build
    rocm_build: str | None  # torch.version.hip
    device_count: int
    said: str  # torch's own words on initialising CUDA (its error, else its warning), as given
    visible: str | None  # CUDA_VISIBLE_DEVICES


def cuda_state() -> CudaState | None:
    """None where torch can use CUDA; else what it says about why not. torch warns about a
    failed initialisation only once a process (`torch.cuda.is_available`), and a Ray
    worker runs many trials, so its reason is asked of `torch.cuda.init()`, which raises
    it every time."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
        said = ""
        if torch.version.cuda is not None or torch.version.hip is not None:
            try:
                torch.cuda.init()
            except Exception as exc:  # torch's RuntimeError or AssertionError: its text is the point
                said = str(exc)
        count = torch.cuda.device_count()
    warned = [str(w.message) for w in caught if "CUDA" in str(w.message)]
    return CudaState(torch.__version__, torch.version.cuda, torch.version.hip, count,
                     said or (warned[0] if warned else ""),
                     os.environ.get("CUDA_VISIBLE_DEVICES"))


def cause_and_fix(state: CudaState) -> tuple[str, str]:
    """Why torch cannot use CUDA, as precisely as it tells, and what a person can do."""
    said = _first_sentence(state.said)
    quoted = f' (torch: "{said}")' if said else ""
    if state.cuda_build is None and state.rocm_build is None:
        return (f"torch {state.torch_version} is built without CUDA (torch.version.cuda is None)",
                "install a CUDA build of torch where the worker runs (its image's torch)")
    lowered = said.lower()
    if "too old" in lowered or "insufficient driver" in lowered:
        return (f"the NVIDIA driver is too old for torch {state.torch_version}, built for CUDA "
                f"{state.cuda_build}{quoted}",
                f"update that host's NVIDIA driver to one that supports CUDA {state.cuda_build}, "
                "or install a torch built for the CUDA version its driver supports")
    if "no nvidia driver" in lowered:
        return f"no NVIDIA driver was found{quoted}", CONTAINER
    if state.device_count == 0:
        visible = " unset" if state.visible is None else f"={state.visible!r}"
        return (f"no GPU is visible to the worker (torch.cuda.device_count() is 0, "
                f"CUDA_VISIBLE_DEVICES{visible}){quoted}",
                f"{CONTAINER}, and check that CUDA_VISIBLE_DEVICES names GPUs that exist")
    return (f"torch.cuda.is_available() is False{quoted or ' and torch gives no reason'}",
            f"check that nvidia-smi lists the GPU inside the worker's container; {CONTAINER}")


def require_cuda(gpu_ids: Sequence[object] | None = None, host: str | None = None) -> None:
    """Raise GpuUnavailableError, naming the host, the GPUs given, the cause and the fix,
    when torch cannot use CUDA here. `gpu_ids`: those Ray gave the task (None: CUDA was
    asked for by name, outside a Ray trial)."""
    state = cuda_state()
    if state is None:
        return
    cause, fix = cause_and_fix(state)
    host = host or socket.gethostname()
    if gpu_ids:
        ids = ", ".join(str(i) for i in gpu_ids)
        given = f"Ray gave this trial GPU{'s' if len(gpu_ids) > 1 else ''} {ids} on host {host}"
        what, instead = "trial", "or set resources.gpus_per_trial to 0 to train on CPUs"
    else:
        given = f"This run asked for a CUDA device on host {host}"
        what, instead = "run", "or run it on the CPU (device 'cpu')"
    raise GpuUnavailableError(
        f"{given}, but torch cannot use CUDA there: {cause}, so the {what} stopped before "
        f"training rather than run on the CPU; {fix}, {instead}.")


def _first_sentence(text: str) -> str:
    """torch's first sentence, without its 'CUDA initialization: ' prefix or its links."""
    text = " ".join(text.split()).removeprefix("CUDA initialization: ")
    return text.split(". ")[0].rstrip(".")[:300]
