"""A study driven from this shell: its runner actor started on Ray, followed to the end
with a progress bar per stage, and its report printed. What `run` and `resume --db` do;
imported by them only, since it loads Optuna, Ray and the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from stagetune.service.cli._common import STUDY_EXIT, Format, console, err_console, fmt, one_line_errors, show
from stagetune.service.settings import get_settings
from stagetune.studies.runner import StudyReport, objective_of, report_of
from stagetune.studies.runner_actor import cancel_study, start_runner, stop_runner, wait_for
from stagetune.studies.spec import StudySpec
from stagetune.studies.stages import ORDER
from stagetune.studies.store import Store
from stagetune.workers.plugins import load_plugins

COLOURS = {"passed": "green", "warned": "yellow", "failed": "red", "skipped": "dim"}


def run_study(db: str | None, spec: StudySpec, format_: Format) -> None:
    """Put the spec's study in the store (or find it there) and drive it."""
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
        store.open_study(spec.name, spec.model_dump(mode="json"), list(ORDER))
    _drive(store, spec.name, format_)


def resume_study(db: str | None, name: str, format_: Format) -> None:
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
    with one_line_errors():
        store.study(name)
    _drive(store, name, format_)


def _drive(store: Store, name: str, format_: Format) -> None:
    """Start the study's runner actor, follow it to the end, and print the report.
    Ctrl-C cancels the study (resume it later)."""
    load_plugins()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran: dict[str, Any] = {}
    if store.study(name).status not in ("completed", "stopped"):  # else: nothing to run
        ran = _follow(store, name, quiet=format_ is not Format.table)
    record = store.study(name)
    # the objective the runner chose; a study that failed before choosing has none, and
    # loading its data here to name one would fail the same way
    objective = ran.get("objective") if ran else objective_of(
        StudySpec.model_validate(record.spec))[0]
    report = report_of(record, objective or "")
    show(report.to_dict(), format_, lambda _: _print_summary(report))
    if format_ is not Format.table and report.status == "failed":
        err_console.print(f"[red]error:[/] {escape(report.message)}", soft_wrap=True)
    raise typer.Exit(STUDY_EXIT[report.status])


def _follow(store: Store, name: str, quiet: bool) -> dict[str, Any]:
    """Run the study to its end; the runner's report (empty after a Ctrl-C)."""
    with one_line_errors(code=1):
        actor = start_runner(name, store.url)
    try:
        if quiet:
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
    table = Table("stage", "verdict", "what it found",
                  title=f"study {escape(report.study)}: {report.status}")
    for stage in report.stages:
        verdict = stage["verdict"] or "not run"
        table.add_row(stage["name"], f"[{COLOURS.get(verdict, 'white')}]{verdict}[/]",
                      escape(stage["message"]))
    console.print(table)
    if report.best:
        baseline = f" (linear baseline {fmt(report.baseline)})" if report.baseline is not None else ""
        console.print(f"best {report.objective}: {fmt(report.best['value'])}{baseline}")
        console.print("best parameters: " + escape(", ".join(
            f"{k}={fmt(v)}" for k, v in report.best["params"].items())))
    console.print(f"compute: {report.compute['epochs']:.1f} epochs, {report.compute['seconds']:.0f} s")
    if report.status != "completed" and report.message:
        err_console.print(f"[bold]{report.status}:[/] {escape(report.message)}", soft_wrap=True)


__all__ = ["resume_study", "run_study"]
