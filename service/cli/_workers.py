"""The `stagetune` command line: train a model or probe a pipeline from the shell."""

from __future__ import annotations

import json
import logging
import math
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workers import StagetuneError, Task, TrialRequest, TrialResult, execute
from workers.request import Metrics

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="stagetune: staged hyperparameter search for PyTorch training.")
console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="a parameter as key=value (repeatable), e.g. --set lr=0.01")]
DatasetOption = Annotated[list[str] | None, typer.Option(
    "--dataset-option", help="a dataset option as key=value (repeatable)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]


class Probe(StrEnum):
    init = "init"
    overfit = "overfit"
    lr = "lr"


PROBE_MODES = {Probe.init: "init_check", Probe.overfit: "overfit", Probe.lr: "lr_probe"}


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="a registered dataset")] = "digits",
    model: Annotated[str, typer.Option(help="a registered model")] = "convnet",
    set_: SetOption = None,
    dataset_option: DatasetOption = None,
    epochs: Annotated[int, typer.Option(min=1, help="epochs to train")] = 15,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    json_: JsonFlag = False,
) -> None:
    """Train MODEL on DATASET and print its per-epoch curve."""
    request = TrialRequest(Task(dataset, model, _pairs(dataset_option, "--dataset-option")),
                           params=_pairs(set_, "--set"), epochs=epochs, seed=seed)
    if json_:
        result = _run(request)
        _print_json({"status": result.status, "message": result.message,
                     "history": result.history, "final": result.final})
        return
    with Progress(TextColumn("[bold]epoch"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as progress:
        bar = progress.add_task("", total=epochs)

        def report(epoch: int, metrics: Metrics) -> bool:
            progress.update(bar, completed=epoch, description=_short(metrics))
            return False

        result = _run(request, report)
    _print_history(result)


@app.command()
def probe(
    which: Annotated[Probe, typer.Argument(help="init, overfit or lr")],
    dataset: Annotated[str, typer.Option(help="a registered dataset")] = "digits",
    model: Annotated[str, typer.Option(help="a registered model")] = "convnet",
    set_: SetOption = None,
    dataset_option: DatasetOption = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="a probe option as key=value: overfit samples/steps, lr iterations")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    json_: JsonFlag = False,
) -> None:
    """Check a pipeline: initial loss, overfitting a tiny subset, or an LR range test."""
    request = TrialRequest(Task(dataset, model, _pairs(dataset_option, "--dataset-option")),
                           params=_pairs(set_, "--set"), mode=PROBE_MODES[which],  # type: ignore[arg-type]
                           seed=seed, options=_pairs(option, "--option"))
    with console.status(f"running the {which.value} probe"):
        result = _run(request)
    if json_:
        _print_json({"probe": request.mode, "verdict": result.status, "message": result.message,
                     "figures": result.probe})
        return
    colour = {"passed": "green", "warned": "yellow", "failed": "red"}[result.status]
    console.print(f"[bold {colour}]{result.status}[/]: {result.message}")
    table = Table("figure", "value")
    for key, value in result.probe.items():
        if isinstance(value, (int, float, str)):
            table.add_row(key, _fmt(value))
    console.print(table)
    if result.status == "failed":
        raise typer.Exit(1)


def _run(request: TrialRequest, report: Any = None) -> TrialResult:
    """Execute, turning the project's own errors into one line and a non-zero exit."""
    try:
        return execute(request, report)
    except StagetuneError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse key=value pairs; values are read as YAML scalars (0.1, true, [1, 2], adamw)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err_console.print(f"[red]error:[/] {flag} takes key=value (got {item!r})")
            raise typer.Exit(2)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _print_history(result: TrialResult) -> None:
    table = Table(title=f"training: {result.status}")
    columns = [c for c in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                           "val_rmse", "lr", "grad_norm", "samples_per_second")
               if result.history and c in result.history[0]]
    for column in columns:
        table.add_column(column, justify="right")
    for metrics in result.history:
        table.add_row(*(_fmt(metrics[c]) for c in columns))
    console.print(table)
    if result.message:
        console.print(result.message)
    if "best" in result.final:
        console.print(f"best {result.final['objective']}: {result.final['best']:.4f} "
                      f"in {result.seconds:.1f} s")


def _short(metrics: Metrics) -> str:
    metric = "val_accuracy" if "val_accuracy" in metrics else "val_rmse"
    return f"train_loss {metrics['train_loss']:.3f}  {metric} {metrics[metric]:.4f}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) and value != int(value) else str(value)
    return str(value)


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()
