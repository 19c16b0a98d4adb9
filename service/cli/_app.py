"""The `stagetune` command line: its commands."""

from __future__ import annotations

import typer

from service.cli._cluster import PASS_THROUGH, head, worker
from service.cli._service import cancel, report, serve, status, submit
from service.cli._study import resume, run, validate
from service.cli._workers import probe, train

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="stagetune: staged hyperparameter search for PyTorch training.")
app.command()(train)
app.command()(probe)
app.command()(run)
app.command()(resume)
app.command()(validate)
app.command()(serve)
app.command()(submit)
app.command()(status)
app.command()(cancel)
app.command()(report)
app.command(context_settings=PASS_THROUGH)(head)
app.command(context_settings=PASS_THROUGH)(worker)

