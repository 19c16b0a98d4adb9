"""A user's own training functions and programs, run in place of the built-in loop."""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydantic import BaseModel

from stagetune.workers import ConfigError, Task, TrialRequest, TrialResult, execute
from stagetune.workers.trainers import TrainerError, register_command, register_trainer
from tests.workers import trainer_plugin  # noqa: F401  (registers the trainers)

ON_DIGITS = Task("digits", None, trainer="own_loop")
OWN_DATA = Task(None, None, trainer="own_loop")
TIMING = ("epoch_seconds",)


def request(task: Task, **fields: object) -> TrialRequest:
    fields.setdefault("epochs", 2)
    return TrialRequest(task, **fields)  # type: ignore[arg-type]


def run(req: TrialRequest, stop_at: int | None = None) -> tuple[TrialResult, dict[int, bytes]]:
    saved: dict[int, bytes] = {}
    result = execute(req, (lambda epoch, _m: epoch == stop_at) if stop_at else None,
                     lambda epoch, blob: saved.__setitem__(epoch, blob))
    return result, saved


def curve(result: TrialResult) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in result.history]


# -- function trainers ------------------------------------------------------------------

def test_a_plain_pytorch_loop_trains_on_the_tasks_digits_with_its_knob() -> None:
    result, _ = run(request(ON_DIGITS, params={"hidden": 48, "lr": 3e-3}, epochs=3))
    assert result.status == "completed" and result.start_epoch == 0
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert all(m["hidden"] == 48 for m in result.history)  # the declared knob reached it
    assert result.final["objective"] == "val_accuracy"
    assert result.final["best"] == max(m["val_accuracy"] for m in result.history) > 0.8


def test_a_trainer_without_a_dataset_loads_its_own() -> None:
    result, _ = run(request(OWN_DATA, params={"hidden": 16, "lr": 1e-2}, epochs=2))
    assert result.status == "completed" and result.final["val_accuracy"] > 0.6


def test_a_bad_trainer_knob_names_the_knob() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        execute(request(OWN_DATA, params={"hidden": 2}))
    with pytest.raises(ConfigError, match="unknown parameter 'hiden'.*hidden"):
        execute(request(OWN_DATA, params={"hiden": 8}))


def test_a_continued_trial_keeps_its_epoch_numbers_and_curve() -> None:
    whole, _ = run(request(OWN_DATA, epochs=4, horizon=4))
    first, saved = run(request(OWN_DATA, epochs=2, horizon=4, checkpoint_at=(2,)))
    assert list(saved) == [2]
    rest, _ = run(request(OWN_DATA, epochs=4, horizon=4, resume=saved[2]))
    assert rest.start_epoch == 2
    assert [m["epoch"] for m in rest.history] == [3, 4]
    assert curve(first) + curve(rest) == curve(whole)  # as if it had never stopped


def test_a_checkpoint_is_handed_over_only_at_the_asked_epochs() -> None:
    _, saved = run(request(OWN_DATA, epochs=3, checkpoint_at=(1, 3)))
    assert sorted(saved) == [1, 3]


def test_the_callers_stop_ends_the_run() -> None:
    result, _ = run(request(OWN_DATA, epochs=5), stop_at=2)
    assert result.status == "stopped" and result.epoch == 2
    assert [m["epoch"] for m in result.history] == [1, 2]


def test_a_trainer_that_ignores_the_stop_is_stopped_at_its_next_report() -> None:
    result, _ = run(request(Task(None, None, trainer="ignores_stop"), epochs=6), stop_at=2)
    assert result.status == "stopped" and [m["epoch"] for m in result.history] == [1, 2]


def test_a_trainer_that_raises_fails_with_the_exceptions_type_and_message() -> None:
    with pytest.raises(TrainerError) as caught:
        execute(request(Task(None, None, trainer="raises")))
    message = str(caught.value)
    assert message.startswith("trainer 'raises' raised RuntimeError: CUDA ran out of patience")
    assert "(at trainer_plugin.py:" in message and "/" not in message.split("(at ")[1]


def test_a_trainer_that_never_reports_gets_a_clear_reason() -> None:
    with pytest.raises(TrainerError, match=r"trainer 'silent' returned without reporting an "
                       r"epoch; call ctx\.report\(epoch, metrics\) after each epoch"):
        execute(request(Task(None, None, trainer="silent")))


def test_a_report_without_the_objective_names_what_it_reported() -> None:
    with pytest.raises(TrainerError, match="reported train_loss, val_acc but not the "
                       "objective 'val_accuracy'"):
        execute(request(Task(None, None, trainer="wrong_metric")))


def test_the_requests_objective_is_the_one_checked() -> None:
    with pytest.raises(TrainerError, match="not the objective 'val_f1'"):
        execute(request(OWN_DATA, objective="val_f1", direction="maximize", epochs=1))


def test_registration_refuses_what_cannot_run() -> None:
    class Clash(BaseModel):
        lr: float = 0.1

    with pytest.raises(ConfigError, match="built-in knobs"):
        register_trainer("clash", knobs=Clash)(lambda ctx: None)
    with pytest.raises(ConfigError, match="already registered"):
        register_trainer("own_loop")(lambda ctx: None)
    with pytest.raises(ConfigError, match="direction must be one of"):
        register_trainer("sideways", objective="val_loss", direction="up")(lambda ctx: None)
    with pytest.raises(ConfigError, match="names lrr; placeholders are epochs"):
        register_command("typo", ["prog", "--lr", "{lrr}"])
    with pytest.raises(ConfigError, match="non-empty list of strings"):
        register_command("shell", "python train.py")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"pass_env must be a list of environment variable "
                       r"names, or a prefix ending in \*"):
        register_command("leaky", ["prog"], pass_env="HOME")
    with pytest.raises(ConfigError, match="got \\['A=B'\\]"):
        register_command("leaky", ["prog"], pass_env=["A=B"])


# -- command trainers -------------------------------------------------------------------

SCRIPT = Task(None, None, trainer="script")


def test_a_command_gets_the_params_as_arguments_and_environment() -> None:
    result, _ = run(request(SCRIPT, params={"lr": 0.02, "width": 24, "hidden": 40}, epochs=3))
    assert result.status == "completed" and result.message == ""
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    last = result.final
    assert (last["lr"], last["width"]) == (0.02, 24)  # argv placeholders
    assert last["env_hidden"] == 40 and last["env_param_hidden"] == 40  # environment
    assert last["env_epochs"] == 3 and last["best"] == pytest.approx(0.53)


def test_a_command_gets_only_the_environment_it_is_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's secrets stay in the worker (a real serve: tests/service/
    test_command_environment.py); PATH, the locale, its devices and what its
    registration names reach the program."""
    dump = tmp_path / "env.json"
    for name, value in {"ENV_DUMP": str(dump), "PASSED_ONE": "1", "LC_TIME": "C",
                        "CUDA_VISIBLE_DEVICES": "", "STAGETUNE_API_TOKENS": "secret",
                        "STAGETUNE_WEBHOOK_TOKEN": "secret", "PGPASSWORD": "secret",
                        "RAY_AUTH_TOKEN": "secret", "NOT_PASSED": "x"}.items():
        monkeypatch.setenv(name, value)
    result, _ = run(request(Task(None, None, trainer="script_env"), params={"hidden": 12}))
    assert result.status == "completed", result.message
    got = json.loads(dump.read_text())
    assert got["PATH"] == os.environ["PATH"] and got["LC_TIME"] == "C"
    assert got["PASSED_ONE"] == "1" and got["CUDA_VISIBLE_DEVICES"] == ""
    assert got["SCRIPT_MODE"] == "env" and got["STAGETUNE_PARAM_HIDDEN"] == "12"
    leaked = {"STAGETUNE_API_TOKENS", "STAGETUNE_WEBHOOK_TOKEN", "PGPASSWORD",
              "RAY_AUTH_TOKEN", "NOT_PASSED"} & set(got)
    assert not leaked


def test_a_command_continues_from_its_checkpoint_folder() -> None:
    first, saved = run(request(SCRIPT, epochs=2, checkpoint_at=(2,)))
    assert list(saved) == [2]
    rest, _ = run(request(SCRIPT, epochs=4, resume=saved[2]))
    assert rest.start_epoch == 2 and [m["epoch"] for m in rest.history] == [3, 4]
    assert rest.final["resumed_from"] == 2 and rest.final["start"] == 2


def test_garbage_lines_are_ignored_and_counted_in_the_message() -> None:
    result, _ = run(request(Task(None, None, trainer="script_garbage"), epochs=3))
    assert result.status == "completed" and len(result.history) == 3
    assert result.message == "6 stdout lines that were not JSON metrics were ignored"


def test_a_non_zero_exit_fails_with_the_tail_of_stderr() -> None:
    with pytest.raises(TrainerError) as caught:
        execute(request(Task(None, None, trainer="script_fail")))
    message = str(caught.value)
    assert message.startswith("command 'script_fail' exited with status 3; the end of its stderr")
    assert "ValueError: the data folder is empty" in message


def test_a_command_that_prints_no_metric_fails_with_a_clear_reason() -> None:
    with pytest.raises(TrainerError, match=r"command 'script_silent' exited without printing a "
                       r"metric line: a JSON object with an \"epoch\".*1 other line ignored"):
        execute(request(Task(None, None, trainer="script_silent")))


@pytest.mark.parametrize("mode", ["slow", "stubborn"])
def test_a_pruned_command_is_stopped_and_its_process_gone(mode: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    started = time.monotonic()
    result, _ = run(request(Task(None, None, trainer=f"script_{mode}"), epochs=30), stop_at=2)
    assert result.status == "stopped" and [m["epoch"] for m in result.history] == [1, 2]
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # SIGTERM ends the polite one at once; the one that ignores it is killed after the grace
    assert time.monotonic() - started < (4 if mode == "slow" else 8)


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, as a Ray worker has it: a process started with SIGINT
    ignored (a background job of a non-interactive shell) keeps it ignored, and
    `_thread.interrupt_main` then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_cancel_in_the_worker_kills_the_command(tmp_path: Path, python_sigint: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray cancels a trial by raising KeyboardInterrupt in its main thread between bytecodes
    # (_thread.interrupt_main): it must land while the program is silent mid-epoch
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        execute(request(Task(None, None, trainer="script_hang"), epochs=3))
    assert time.monotonic() - started < 6  # SIGTERM ended it at once, not after ten minutes
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- probes on parts --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["init_check", "overfit", "lr_probe"])
def test_the_probes_run_on_a_trainers_parts(mode: str) -> None:
    options = {"overfit": {"samples": 32, "steps": 200}, "lr_probe": {"iterations": 60}}
    result = execute(TrialRequest(OWN_DATA, params={"hidden": 32}, mode=mode,  # type: ignore[arg-type]
                                  options=options.get(mode, {})))
    assert result.status == "passed", result.message
    assert result.parameters == 64 * 32 + 32 + 32 * 10 + 10
    if mode == "init_check":
        assert result.probe["expected_loss"] == pytest.approx(2.30, abs=0.05)
    if mode == "lr_probe":
        assert 1e-5 < result.probe["suggested_lr"] < 1


def test_a_loss_of_its_own_is_judged_only_against_what_it_states() -> None:
    unstated = execute(TrialRequest(Task(None, None, trainer="loss_unstated"), mode="init_check"))
    assert unstated.status == "passed" and "not judged" in unstated.message
    assert "TrainerParts(expected_loss=...)" in unstated.message
    stated = execute(TrialRequest(Task(None, None, trainer="loss_stated"), mode="init_check"))
    assert stated.status == "failed" and "too high" in stated.message  # 23 against 2


@pytest.mark.parametrize("trainer", ["own_loop_unprobed", "script"])
def test_without_parts_the_probes_say_what_to_expose(trainer: str) -> None:
    result = execute(TrialRequest(Task(None, None, trainer=trainer), mode="overfit"))
    assert result.status == "skipped"
    assert ("parts=fn(ctx) -> TrainerParts(model, loss, batches)" in result.message
            if trainer != "script" else "is a command" in result.message)
