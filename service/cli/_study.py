"""`stagetune validate` and `stagetune run`: a whole staged study from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import optuna
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.cli._common import JsonFlag, console, err_console, one_line_errors, print_json
from service.settings import get_settings
from studies.runner import Runner, StudyReport
from studies.spec import StudySpec, load_spec
from studies.store import Store

SpecPath = Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")]
EXIT = {"completed": 0, "stopped": 2, "failed": 1}
COLOURS = {"passed": "green", "warned": "yellow", "failed": "red", "skipped": "dim"}


def validate(spec: SpecPath) -> None:
    """Check a spec: print 'ok', or every problem with the field it is in."""
    with one_line_errors():
        load_spec(spec)
    console.print("ok")


def run(
    spec: SpecPath,
    db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the store (default: $STAGETUNE_DATABASE_URL, "
             "else sqlite:///stagetune.db)")] = None,
    json_: JsonFlag = False,
) -> None:
    """Run or resume a staged study: exit 0 when it completes, 2 when a gate stops it, 1 on error."""
    with one_line_errors():
        study = load_spec(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
    if json_:
        report = _run(study, store, None)
        print_json(report.to_dict())
    else:
        with _stage_progress() as progress:
            report = _run(study, store, progress)
        _print_summary(report)
    raise typer.Exit(EXIT[report.status])


def _run(spec: StudySpec, store: Store, progress: Progress | None) -> StudyReport:
    bars: dict[str, TaskID] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if progress is None:
            return
        if stage not in bars:
            bars[stage] = progress.add_task(stage, total=total)
        progress.update(bars[stage], completed=done, total=total)

    with one_line_errors(code=1):  # the runner has marked the study failed with this reason
        return Runner(spec, store, progress=tick).run()
    raise AssertionError("unreachable")


def _stage_progress() -> Progress:
    return Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console)


def _print_summary(report: StudyReport) -> None:
    table = Table("stage", "verdict", "what it found", title=f"study {report.study}: {report.status}")
    for stage in report.stages:
        verdict = stage["verdict"] or "not run"
        table.add_row(stage["name"], f"[{COLOURS.get(verdict, 'white')}]{verdict}[/]",
                      stage["message"])
    console.print(table)
    if report.best:
        baseline = f" (linear baseline {report.baseline:.4g})" if report.baseline is not None else ""
        console.print(f"best {report.objective}: {report.best['value']:.4g}{baseline}")
        console.print("best parameters: " + ", ".join(f"{k}={v}" for k, v in report.best["params"].items()))
    console.print(f"compute: {report.compute['epochs']:.1f} epochs, {report.compute['seconds']:.0f} s")
    if report.status != "completed" and report.message:
        console.print(f"[bold]{report.status}:[/] {report.message}")
