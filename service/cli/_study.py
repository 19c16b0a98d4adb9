"""`stagetune validate`, `run` and `resume`: a whole staged study from the shell, on Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.cli._common import JsonFlag, console, err_console, escape, one_line_errors, print_json
from service.settings import get_settings
from studies.runner import StudyReport, objective_of, report_of
from studies.runner_actor import cancel_study, start_runner, stop_runner, wait_for
from studies.spec import StudySpec, load_spec
from studies.stages import ORDER
from studies.store import Store
from workers.plugins import load_plugins

SpecPath = Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")]
EXIT = {"completed": 0, "stopped": 2, "cancelled": 3, "failed": 1}
COLOURS = {"passed": "green", "warned": "yellow", "failed": "red", "skipped": "dim"}


def validate(spec: SpecPath) -> None:
    """Check a spec: print 'ok', or every problem with the field it is in."""
    with one_line_errors():
        load_plugins()  # the spec may name a plugin's model, dataset, trainer or knobs
        load_spec(spec)
    console.print("ok")


DbOption = Annotated[str | None, typer.Option(
    help="SQLAlchemy URL of the store (default: $STAGETUNE_DATABASE_URL, "
         "else sqlite:///stagetune.db)")]


def run(spec: SpecPath, db: DbOption = None, json_: JsonFlag = False) -> None:
    """Run or resume a staged study on Ray ($RAY_ADDRESS, else a local Ray). Exit 0 when
    it completes, 2 when a gate stops it, 3 when it is cancelled, 1 on error."""
    with one_line_errors():
        load_plugins()
        study = load_spec(spec)
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
        store.open_study(study.name, study.model_dump(mode="json"), list(ORDER))
    _drive(store, study.name, json_)


def resume(
    study: Annotated[str, typer.Argument(help="the name of a study in the store")],
    db: DbOption = None, json_: JsonFlag = False,
) -> None:
    """Resume a study from the store with a new runner: finished trials are kept, trials
    its old runner left running are marked failed, and the rest runs. Exit codes as `run`."""
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
    with one_line_errors():
        store.study(study)
    _drive(store, study, json_)


def _drive(store: Store, name: str, json_: bool) -> None:
    """Start the study's runner actor, follow it to the end, and print the report.
    Ctrl-C cancels the study (resume it later)."""
    load_plugins()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran: dict[str, Any] = {}
    if store.study(name).status not in ("completed", "stopped"):  # else: nothing to run
        ran = _follow(store, name, json_)
    record = store.study(name)
    # the objective the runner chose; a study that failed before choosing has none, and
    # loading its data here to name one would fail the same way
    objective = ran.get("objective") if ran else objective_of(
        StudySpec.model_validate(record.spec))[0]
    report = report_of(record, objective or "")
    if json_:
        print_json(report.to_dict())
    else:
        _print_summary(report)
    if json_ and report.status == "failed":
        err_console.print(f"[red]error:[/] {escape(report.message)}", soft_wrap=True)
    raise typer.Exit(EXIT[report.status])


def _follow(store: Store, name: str, json_: bool) -> dict[str, Any]:
    """Run the study to its end; the runner's report (empty after a Ctrl-C)."""
    with one_line_errors(code=1):
        actor = start_runner(name, store.url)
    try:
        if json_:
            return wait_for(actor)
        with _stage_progress() as progress:
            return wait_for(actor, on_progress=_ticker(progress))
    except KeyboardInterrupt:
        err_console.print("cancelling: the running trials are being stopped...")
        cancel_study(name, store.url)
        return {}
    finally:
        stop_runner(actor)


def _ticker(progress: Progress) -> Callable[[dict[str, Any]], None]:
    bars: dict[str, TaskID] = {}

    def tick(state: dict[str, Any]) -> None:
        for stage, (done, total) in state["stages"].items():
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done, total=total)

    return tick


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
        err_console.print(f"[bold]{report.status}:[/] {escape(report.message)}", soft_wrap=True)
