"""GPUs that torch cannot use: the check names each cause in one sentence, and a run that
asked for CUDA stops with it before training, never falls back to the CPU."""

from __future__ import annotations

import pytest
import torch

from stagetune.workers import Task, TrialRequest, execute
from stagetune.workers.gpu_check import (
    CudaState,
    GpuUnavailableError,
    cause_and_fix,
    cuda_state,
    require_cuda,
)
from stagetune.workers.runtime import pick_device, trial_device

NO_CUDA_HERE = not torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(not NO_CUDA_HERE, reason="torch can use CUDA on this machine")

# torch's own texts (c10/cuda/CUDAFunctions.cpp), as torch.cuda.init() raises them
TOO_OLD = ("The NVIDIA driver on your system is too old (found version 11040). Please update "
           "your GPU driver by downloading and installing a newer version from the URL: "
           "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org "
           "to install a PyTorch version that has been compiled with your version of the CUDA "
           "driver.")
NO_DRIVER = ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU "
             "and installed a driver from http://www.nvidia.com/Download/index.aspx")


def state(cuda: str | None = "12.4", count: int = 0, said: str = "",
          visible: str | None = None) -> CudaState:
    return CudaState("2.6.0+cu124" if cuda else "2.6.0+cpu", cuda, None, count, said, visible)


@pytest.mark.parametrize(("cuda_state_", "cause_words", "fix_words"), [
    (state(cuda=None), ["torch 2.6.0+cpu is built without CUDA", "torch.version.cuda is None"],
     ["install a CUDA build of torch"]),
    (state(said=TOO_OLD), ["NVIDIA driver is too old", "built for CUDA 12.4",
                           '"The NVIDIA driver on your system is too old (found version 11040)"'],
     ["update that host's NVIDIA driver", "supports CUDA 12.4"]),
    (state(said=f"CUDA initialization: {NO_DRIVER}"),
     ["no NVIDIA driver was found", '"Found no NVIDIA driver on your system"'],
     ["install the NVIDIA driver and the NVIDIA Container Toolkit", "--gpus all"]),
    (state(said="No CUDA GPUs are available", visible="3"),
     ["no GPU is visible", "torch.cuda.device_count() is 0", "CUDA_VISIBLE_DEVICES='3'",
      '"No CUDA GPUs are available"'],
     ["--gpus all", "CUDA_VISIBLE_DEVICES names GPUs that exist"]),
    (state(count=1, said="CUDA unknown error"),
     ["torch.cuda.is_available() is False", '"CUDA unknown error"'], ["nvidia-smi"]),
], ids=["cpu-build", "driver-too-old", "no-driver", "no-device", "other"])
def test_each_cause_is_named_with_torchs_words_and_a_fix(
        cuda_state_: CudaState, cause_words: list[str], fix_words: list[str]) -> None:
    cause, fix = cause_and_fix(cuda_state_)
    for words in cause_words:
        assert words in cause, cause
    for words in fix_words:
        assert words in fix, fix
    assert "http" not in cause  # torch's first sentence only, not its links
    assert "\n" not in cause + fix


@needs_no_cuda
def test_gpus_torch_cannot_use_fail_with_one_sentence() -> None:
    """This machine has no usable CUDA: the real check, on the real torch."""
    found = cuda_state()
    assert found is not None and found.device_count == 0
    with pytest.raises(GpuUnavailableError) as raised:
        require_cuda([0, 1], "gpu-box (10.0.0.7)")
    sentence = str(raised.value)
    print(f"\nthe sentence: {sentence}")
    assert sentence.startswith("Ray gave this trial GPUs 0, 1 on host gpu-box (10.0.0.7), but "
                               "torch cannot use CUDA there: "), sentence
    assert cause_and_fix(found)[0] in sentence
    assert "rather than run on the CPU" in sentence
    assert sentence.endswith("or set resources.gpus_per_trial to 0 to train on CPUs.")
    assert sentence.count(". ") == 0  # one sentence


@needs_no_cuda
def test_a_trial_given_gpus_gets_no_device_and_one_given_none_the_cpu() -> None:
    with pytest.raises(GpuUnavailableError, match="Ray gave this trial GPU 0 on host h1"):
        trial_device(None, [0], "h1")
    with pytest.raises(GpuUnavailableError, match="Ray gave this trial GPU 0 on host"):
        trial_device("cuda:0", ["0"])  # the host defaults to this machine's name
    assert trial_device(None, []) == "cpu"
    assert trial_device("cpu", [0]) == "cpu"  # a request that names the CPU gets it


@needs_no_cuda
def test_a_run_that_asks_for_cuda_stops_before_training() -> None:
    """Outside Ray (the CLI, in-process studies): `device='cuda'` is checked too."""
    with pytest.raises(GpuUnavailableError, match="This run asked for a CUDA device") as raised:
        pick_device("cuda")
    assert "or run it on the CPU (device 'cpu')." in str(raised.value)
    epochs: list[int] = []

    def report(epoch: int, _: object) -> bool:
        epochs.append(epoch)
        return False

    with pytest.raises(GpuUnavailableError, match="so the run stopped before training"):
        execute(TrialRequest(Task("digits", "mlp"), epochs=1, device="cuda"), report)
    assert epochs == []
    assert pick_device(None) == torch.device("cpu")  # nothing asked: the CPU, as before


@pytest.mark.skipif(NO_CUDA_HERE, reason="no CUDA on this machine")
def test_usable_gpus_pass_the_check() -> None:
    require_cuda([0])
    assert trial_device(None, [0]) == "cuda"
