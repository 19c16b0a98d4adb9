"""The installed `stagetune` command, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagetune.service.cli._app import app

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))


def stagetune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAGETUNE, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_json_prints_status_history_and_final() -> None:
    out = stagetune("train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed"
    assert [m["epoch"] for m in result["history"]] == [1, 2]
    assert result["final"]["objective"] == "val_accuracy"


@pytest.mark.slow
def test_train_prints_a_table_without_json() -> None:
    out = stagetune("train", "--model", "mlp", "--epochs", "1", "--set", "lr=0.01")
    assert out.returncode == 0, out.stderr
    assert "val_accuracy" in out.stdout.replace("…", "") or "best val_accuracy" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "--dataset", "digts"], "breast_cancer, cifar10"),
    (["train", "--model", "resnt"], "registered:"),
    (["train", "--set", "lrr=0.1"], "known: activation"),
    (["train", "--set", "lr=-1"], "lr:"),
    (["train", "--set", "depth=0"], "depth:"),
    (["train", "--set", "batch_size=5000"], "larger than"),
    (["train", "--set", "weights=/nonexistent.pt", "--set", "transfer=full"], "does not exist"),
    (["train", "--set", "lr"], "key=value"),
    (["train", "--dataset", "cifar10"], "STAGETUNE_ALLOW_DOWNLOAD"),
    (["probe", "overfit", "--option", "smaples=3"], "allowed: samples"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert needle in " ".join(result.output.split())


@pytest.mark.slow
def test_the_installed_command_reports_bad_input_without_a_traceback() -> None:
    out = stagetune("train", "--set", "lrr=0.1")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("error: unknown parameter 'lrr'; known:")


@pytest.mark.slow
def test_probe_json_and_failing_probe_exit_code() -> None:
    out = stagetune("probe", "init", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verdict"] == "passed"
    out = stagetune("probe", "overfit", "--set", "lr=0", "--option", "steps=20")
    assert out.returncode == 1
    assert "failed" in out.stdout
