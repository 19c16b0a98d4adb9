"""Checkpoints, resume and the schedule horizon, on real data and in a second process."""

from __future__ import annotations

import concurrent.futures as cf
import io
import multiprocessing

import pytest
import torch

from stagetune.workers import ConfigError, Task, TrialRequest, TrialResult, execute
from stagetune.workers.config import parse_params
from stagetune.workers.data import load_dataset
from stagetune.workers.models import build_model

DIGITS = Task("digits", "convnet")
MLP = Task("digits", "mlp")
# Dropout and augmentation draw from torch's global RNG: resume must restore it too.
NOISY = {"dropout": 0.2, "augment": "flip+cutout"}
TIMING = ("epoch_seconds", "samples_per_second")


def without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def checkpoints(request: TrialRequest, report=None) -> tuple[TrialResult, dict[int, bytes]]:
    saved: dict[int, bytes] = {}
    result = execute(request, report, lambda epoch, blob: saved.__setitem__(epoch, blob))
    return result, saved


def in_another_process(request: TrialRequest, monkeypatch: pytest.MonkeyPatch) -> TrialResult:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as in this process (tests/conftest.py)
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(execute, request).result(timeout=300)


@pytest.mark.slow
def test_resume_in_another_process_reproduces_the_uninterrupted_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    straight = execute(TrialRequest(DIGITS, params=NOISY, epochs=3))
    first, saved = checkpoints(TrialRequest(DIGITS, params=NOISY, epochs=1, horizon=3,
                                            checkpoint_at=(1,)))
    assert list(saved) == [1]
    resumed = in_another_process(
        TrialRequest(DIGITS, params=NOISY, epochs=3, resume=saved[1]), monkeypatch)

    assert resumed.status == "completed" and resumed.start_epoch == 1
    assert [m["epoch"] for m in resumed.history] == [2, 3]
    assert without_timing(first.history + resumed.history) == without_timing(straight.history)


def test_horizon_keeps_the_schedule_of_the_longer_run() -> None:
    short = execute(TrialRequest(MLP, epochs=3, horizon=10))
    full = execute(TrialRequest(MLP, epochs=10))
    assert short.history[2]["lr"] == full.history[2]["lr"] > 0.5 * 3e-3
    assert without_timing(short.history) == without_timing(full.history[:3])


def test_a_run_stopped_at_a_checkpoint_epoch_still_saves_once_it_has_reported() -> None:
    """Report, then checkpoint, then obey: a stopped run can go on, and a runner or worker
    lost between the two re-runs the epoch instead of losing its record."""
    events: list[str] = []

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        events.append(f"report {epoch}")
        return epoch == 2

    def save(epoch: int, blob: bytes) -> None:
        events.append(f"save {epoch}")

    result = execute(TrialRequest(MLP, epochs=6, checkpoint_at=(2, 5)), report, save)
    assert result.status == "stopped"
    assert events == ["report 1", "report 2", "save 2"]


def test_early_stopping_count_survives_a_resume() -> None:
    # lr 0: epoch 1 sets the best, later epochs never improve, patience 2 stops after 3.
    params = {"lr": 0.0, "patience": 2}
    straight = execute(TrialRequest(MLP, params=params, epochs=10))
    assert straight.status == "early_stopped" and straight.epoch == 3
    _, saved = checkpoints(TrialRequest(MLP, params=params, epochs=2, horizon=10,
                                        checkpoint_at=(2,)))
    resumed = execute(TrialRequest(MLP, params=params, epochs=10, resume=saved[2]))
    assert resumed.status == "early_stopped" and resumed.epoch == 3


def test_resume_at_or_past_the_last_epoch_trains_nothing() -> None:
    _, saved = checkpoints(TrialRequest(MLP, epochs=2, checkpoint_at=(1, 2)))
    result = execute(TrialRequest(MLP, epochs=2, resume=saved[2]))
    assert result.status == "completed" and result.history == [] and result.start_epoch == 2


def test_a_checkpoint_is_plain_tensors_and_containers() -> None:
    _, saved = checkpoints(TrialRequest(MLP, epochs=1, checkpoint_at=(1,)))
    payload = torch.load(io.BytesIO(saved[1]), weights_only=True)
    assert payload["loop"]["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "generator", "cpu_rng"} <= set(payload)
    assert all(t.device.type == "cpu" for t in payload["model"].values())


def test_a_checkpoint_of_another_model_is_a_config_error() -> None:
    _, saved = checkpoints(TrialRequest(MLP, epochs=1, horizon=2, checkpoint_at=(1,)))
    with pytest.raises(ConfigError, match="the checkpoint does not fit this model: .*size"):
        execute(TrialRequest(MLP, params={"width": 16}, epochs=2, resume=saved[1]))
    with pytest.raises(ConfigError, match="the checkpoint does not fit this model"):
        execute(TrialRequest(DIGITS, epochs=2, resume=saved[1]))
    with pytest.raises(ConfigError, match="optimizer AdamW, this run uses SGD"):
        execute(TrialRequest(MLP, params={"optimizer": "sgd"}, epochs=2, resume=saved[1]))
    with pytest.raises(ConfigError, match="resume holds no readable checkpoint"):
        execute(TrialRequest(MLP, epochs=2, resume=b"not a checkpoint"))


def test_resume_needs_the_checkpoints_horizon() -> None:
    _, saved = checkpoints(TrialRequest(MLP, epochs=1, horizon=5, checkpoint_at=(1,)))
    with pytest.raises(ConfigError, match="resume with horizon=5"):
        execute(TrialRequest(MLP, epochs=3, resume=saved[1]))


def test_horizon_shorter_than_epochs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="horizon 2 is shorter than epochs 3"):
        execute(TrialRequest(MLP, epochs=3, horizon=2))


def test_parameters_counts_every_parameter() -> None:
    data = load_dataset("digits")
    _, model_cfg = parse_params({})
    expected = sum(p.numel() for p in build_model("mlp", data, model_cfg).parameters())
    result = execute(TrialRequest(MLP, epochs=1))
    assert result.parameters == expected > 0
