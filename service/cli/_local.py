"""A study driven from this shell: its runner actor started on Ray, followed to the end
with a progress bar per stage, and its report printed. What `run` and `resume --db` do;
imported by them only, since it loads Optuna, Ray and the store."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import optuna
import ray
import typer
from ray.exceptions import RayError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from stagetune.service.cli._common import STUDY_EXIT, Format, console, err_console, fmt, one_line_errors, show
from stagetune.service.settings import get_settings
from stagetune.studies.run.ray_faults import lost_sentence
from stagetune.studies.run.runner import CANCELLED, StudyReport, objective_of, report_of
from stagetune.studies.run.runner_actor import cancel_study, start_runner, stop_runner, wait_for
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import StudySpec
from stagetune.studies.store import Store, extend_study
from stagetune.workers import StagetuneError
from stagetune.workers.plugins import load_plugins

log = logging.getLogger(__name__)

COLOURS = {"passed": "green", "warned": "yellow", "failed": "red", "skipped": "dim"}


def run_study(db: str | None, spec: StudySpec, format_: Format) -> None:
    """Put the spec's study in the store (or find it there) and drive it."""
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
        store.open_study(spec.name, spec.to_store(), list(ORDER))
    _drive(store, spec.name, format_)


def resume_study(db: str | None, name: str, format_: Format) -> None:
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
    with one_line_errors():
        store.study(name)
    _drive(store, name, format_)


def extend_study_here(db: str | None, name: str, epochs: int, seconds: float | None,
                      format_: Format) -> None:
    with one_line_errors(code=1):
        store = Store(db or get_settings().database_url)
    with one_line_errors():
        extend_study(store.url, name, epochs, seconds)
    _drive(store, name, format_)


def _drive(store: Store, name: str, format_: Format) -> None:
    """Start the study's runner actor, follow it to the end, and print the report.
    Ctrl-C cancels the study (resume it later)."""
    load_plugins()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran: dict[str, Any] = {}
    # Ray prints what it hears of its workers ("(raylet) A worker died ...") on stdout,
    # which is the report's: stderr gets it, and Ray is left before the report is printed.
    with one_line_errors(code=1), contextlib.redirect_stdout(sys.stderr):
        if store.study(name).status not in ("completed", "stopped"):  # else: nothing to run
            try:
                ran = _follow(store, name, quiet=format_ is not Format.table)
            finally:
                ray.shutdown()
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
    """Run the study to its end; the runner's report. Empty after a Ctrl-C (the study is
    cancelled), or when the study could not go on here (Ray would not start, Ray lost its
    runner: killed for memory, say): then it is recorded failed with the reason, so that
    it is never left pending or running with no runner, and the report says why."""
    actor = None
    try:
        actor = start_runner(name, store.url)
        if quiet:
            return wait_for(actor)
        with _stage_progress() as progress:
            return wait_for(actor, on_progress=_ticker(progress))
    except KeyboardInterrupt:
        err_console.print("cancelling: the running trials are being stopped...")
        _cancel(store, name)
        return {}
    except Exception as exc:
        _failed(store, name, exc)
        return {}
    finally:
        if actor is not None:
            with contextlib.suppress(Exception):  # Ray itself gone: so is the runner
                stop_runner(actor)


def _failed(store: Store, name: str, exc: Exception) -> None:
    """Record why the study stopped here; `stagetune resume` goes on from the store."""
    if isinstance(exc, RayError):
        reason = lost_sentence("the study's runner", exc)
    elif isinstance(exc, StagetuneError):
        reason = str(exc)
    else:
        log.exception("study %s: unexpected error", name)
        reason = f"internal error: {exc.__class__.__name__}: {exc}"
    store.set_status(name, "failed", f"{reason}; resume it to go on",
                     only_from=("pending", "running"))


def _cancel(store: Store, name: str) -> None:
    try:
        cancel_study(name, store.url)
    except RayError:  # its runner is gone: nothing runs, only the store says so
        store.set_status(name, "cancelled", CANCELLED, only_from=("pending", "running"))


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
