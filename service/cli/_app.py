"""The `stagetune` command line: its commands."""

from __future__ import annotations

import importlib.metadata

import typer

from stagetune.service.cli._cluster import PASS_THROUGH, head, worker
from stagetune.service.cli._reads import best, front, status, trials
from stagetune.service.cli._remote import cancel, delete, model, report, submit
from stagetune.service.cli._service import serve
from stagetune.service.cli._study import extend, resume, run, schema, validate
from stagetune.service.cli._workers import probe, train

EPILOG = ("Exit codes: 0 ok; 1 an error (the service unreachable, a study that failed); "
          "2 bad input (a spec, a flag, a study name); 3 a gate stopped the study; "
          "4 the study was cancelled.")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="stagetune: staged hyperparameter search for PyTorch training.",
                  epilog=EPILOG)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"stagetune {importlib.metadata.version('stagetune')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print stagetune's version and exit.")) -> None:
    """stagetune: staged hyperparameter search for PyTorch training."""


for command in (train, probe, run, resume, extend, validate, schema, serve, submit, status, trials,
                best, front, model, cancel, delete, report):
    app.command()(command)
app.command(context_settings=PASS_THROUGH)(head)
app.command(context_settings=PASS_THROUGH)(worker)
