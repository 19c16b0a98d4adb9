"""`stagetune train` and `stagetune probe`: one model, one run, from the shell."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stagetune.service.cli._common import (
    Format,
    FormatOption,
    JsonFlag,
    console,
    err_console,
    fail,
    fmt,
    one_line_errors,
    output_format,
    pairs,
    require,
    show,
)
from stagetune.workers.request import Metrics, Task, TrialRequest

if TYPE_CHECKING:
    from stagetune.workers import TrialResult

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="a parameter as key=value (repeatable), e.g. --set lr=0.01")]
DatasetOption = Annotated[list[str] | None, typer.Option(
    "--dataset-option", help="a dataset option as key=value (repeatable)")]
DatasetName = Annotated[str, typer.Option(help="a registered dataset")]
ModelName = Annotated[str, typer.Option(help="a registered model")]


class Probe(StrEnum):
    init = "init"
    overfit = "overfit"
    lr = "lr"


PROBE_MODES = {Probe.init: "init_check", Probe.overfit: "overfit", Probe.lr: "lr_probe"}


def train(
    dataset: DatasetName = "digits",
    model: ModelName = "convnet",
    set_: SetOption = None,
    dataset_option: DatasetOption = None,
    epochs: Annotated[int, typer.Option(min=1, help="epochs to train")] = 15,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    save_weights: Annotated[Path | None, typer.Option(
        help="write the trained state_dict here (a starting point for transfer learning)")] = None,
    format_: FormatOption = None,
    json_: JsonFlag = False,
) -> None:
    """Train MODEL on DATASET and print its per-epoch curve."""
    require("train", "worker")
    from stagetune.workers import execute  # torch: loaded by the commands that train only
    from stagetune.workers.plugins import load_plugins

    with one_line_errors():
        load_plugins()  # before any name is looked up: a plugin's model is a name too
    request = TrialRequest(Task(dataset, model, pairs(dataset_option, "--dataset-option")),
                           params=pairs(set_, "--set"), epochs=epochs, seed=seed,
                           return_weights=save_weights is not None)
    chosen = output_format(format_, json_)
    if chosen is not Format.table:
        with one_line_errors():
            result = execute(request)
        _save(result, save_weights)
        show({"status": result.status, "message": result.message, "history": result.history,
              "final": result.final}, chosen, lambda _: None)
        return
    with Progress(TextColumn("[bold]epoch"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as progress:
        bar = progress.add_task("", total=epochs)

        def report(epoch: int, metrics: Metrics) -> bool:
            progress.update(bar, completed=epoch, description=_short(metrics))
            return False

        with one_line_errors():
            result = execute(request, report)
    _save(result, save_weights)
    _print_history(result)
    if save_weights is not None:
        console.print(f"weights saved to {save_weights}")


def _save(result: TrialResult, path: Path | None) -> None:
    if path is None or result.state_dict is None:
        return
    import torch

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.state_dict, path)
    except OSError as exc:
        raise fail(f"cannot write weights to {path}: {exc.strerror}") from None


def probe(
    which: Annotated[Probe, typer.Argument(help="init, overfit or lr")],
    dataset: DatasetName = "digits",
    model: ModelName = "convnet",
    set_: SetOption = None,
    dataset_option: DatasetOption = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="a probe option as key=value: overfit samples/steps, lr iterations")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    format_: FormatOption = None,
    json_: JsonFlag = False,
) -> None:
    """Check a pipeline: initial loss, overfitting a tiny subset, or an LR range test."""
    require("probe", "worker")
    from stagetune.workers import execute
    from stagetune.workers.plugins import load_plugins

    chosen = output_format(format_, json_)
    with one_line_errors():
        load_plugins()
    request = TrialRequest(Task(dataset, model, pairs(dataset_option, "--dataset-option")),
                           params=pairs(set_, "--set"), mode=PROBE_MODES[which],  # type: ignore[arg-type]
                           seed=seed, options=pairs(option, "--option"))
    with console.status(f"running the {which.value} probe"), one_line_errors():
        result = execute(request)
    show({"probe": request.mode, "verdict": result.status, "message": result.message,
          "figures": result.probe}, chosen, lambda _: _print_probe(result))
    if result.status == "failed":
        raise typer.Exit(1)


def _print_probe(result: TrialResult) -> None:
    colour = {"passed": "green", "warned": "yellow", "failed": "red"}[result.status]
    console.print(f"[bold {colour}]{result.status}[/]: {escape(result.message)}")
    table = Table("figure", "value")
    for key, value in result.probe.items():
        if isinstance(value, (int, float, str)):
            table.add_row(key, fmt(value))
    console.print(table)


def _print_history(result: TrialResult) -> None:
    table = Table(title=f"training: {result.status}")
    first = result.history[0] if result.history else {}
    validation = sorted(c for c in first if c.startswith("val_") and c != "val_loss")
    columns = [c for c in ("epoch", "train_loss", "train_accuracy", "val_loss", *validation,
                           "lr", "grad_norm", "samples_per_second") if c in first]
    for column in columns:
        table.add_column(column, justify="right")
    for metrics in result.history:
        table.add_row(*(fmt(metrics[c]) for c in columns))
    console.print(table)
    if result.message:
        console.print(result.message)
    if "best" in result.final:
        console.print(f"best {result.final['objective']}: {result.final['best']:.4f} "
                      f"in {result.seconds:.1f} s")


def _short(metrics: Metrics) -> str:
    shown = [c for c in ("train_loss", "val_accuracy", "val_rmse") if c in metrics]
    return "  ".join(f"{c} {metrics[c]:.4g}" for c in shown)
