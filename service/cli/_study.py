"""`stagetune validate`, `schema`, `run`, `resume` and `extend`: a whole staged study from
the shell, on Ray (or, with `--url`, through a service)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stagetune.service.cli._common import (
    FormatOption,
    IntervalOption,
    JsonFlag,
    console,
    fail,
    missing,
    one_line_errors,
    output_format,
    require,
    service_errors,
)
from stagetune.service.cli._remote import TokenOption, extend_through, resume_through

SpecPath = Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")]
DbOption = Annotated[str | None, typer.Option(
    help="SQLAlchemy URL of the store (default: $STAGETUNE_DATABASE_URL, "
         "else sqlite:///stagetune.db)")]


# What a client-only install cannot check: it needs the workers' registries (so torch)
LEFT_TO_THE_SERVICE = ("ok (its schema; registered names, knob values, dataset options and the "
                       "budget are left to the service, which checks them at submit; "
                       "pip install 'stagetune[worker]' to check them here)")


CheckUrlOption = Annotated[str | None, typer.Option(envvar="STAGETUNE_URL", help=(
    "check at this service, as its submit would (its plugins, data folder and nodes); "
    "default: check here"))]


def validate(spec: SpecPath, url: CheckUrlOption = None, token: TokenOption = None) -> None:
    """Check a spec: print 'ok', or every problem with the field it is in.

    With --url (or STAGETUNE_URL) the service checks it, where the workers' code is already
    loaded: quick, and against what the study will really meet. Here, without the worker
    packages (`pip install stagetune` alone), it checks the spec's schema and says which
    checks it left to the service; with them, it checks everything (importing torch: seconds)."""
    if url is not None:
        if not spec.is_file():
            raise fail(f"spec file {spec} does not exist")
        from stagetune.service.client import Client

        with service_errors(), Client(url, token) as api:
            answer = api.validate(spec)
        console.print(f"ok ({answer.detail})", soft_wrap=True, markup=False, highlight=False)
        return
    from stagetune.studies.spec import load_spec  # here: the other commands need no spec model
    from stagetune.workers.plugins import load_plugins

    if missing("worker"):
        with one_line_errors():
            load_spec(spec, worker_checks=False)
        console.print(LEFT_TO_THE_SERVICE, soft_wrap=True, markup=False, highlight=False)
        return
    with one_line_errors():
        load_plugins()  # the spec may name a plugin's model, dataset, trainer or knobs
        load_spec(spec)
    console.print("ok")


def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help=(
        "the file to write (default: print it)"))] = None,
) -> None:
    """Write the study spec's JSON Schema, for editors.

    Draft 2020-12, self-contained. With the YAML language server (VS Code's YAML
    extension, among others), start a spec with `# yaml-language-server: $schema=FILE`."""
    from stagetune.studies.spec.schema import spec_schema

    text = json.dumps(spec_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    if output.is_dir() or not output.parent.is_dir():
        raise fail(f"cannot write {output}: give a file in an existing folder")
    output.write_text(text, encoding="utf-8")
    console.print(f"the spec's JSON Schema written to {output}")


def run(spec: SpecPath, db: DbOption = None, format_: FormatOption = None,
        json_: JsonFlag = False) -> None:
    """Run or resume a staged study on Ray ($RAY_ADDRESS, else a local Ray).

    Exit 0 when it completes, 3 when a gate stops it, 4 when it is cancelled (Ctrl-C
    cancels it), 1 when it fails, 2 on bad input."""
    chosen = output_format(format_, json_)
    require("run", "server", "worker")
    from stagetune.studies.spec import load_spec
    from stagetune.workers.plugins import load_plugins

    with one_line_errors():
        load_plugins()
        study = load_spec(spec)
    from stagetune.service.cli._local import run_study

    run_study(db, study, chosen)


def resume(
    ctx: typer.Context,
    study: Annotated[str, typer.Argument(help="the name of a study in the store")],
    db: DbOption = None,
    url: Annotated[str | None, typer.Option(envvar="STAGETUNE_URL", help=(
        "resume it through this service instead (POST /api/studies/ID/resume); "
        "--db wins over $STAGETUNE_URL"))] = None,
    token: TokenOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help=(
        "with --url: follow the study to its end and exit with its exit code"))] = False,
    interval: IntervalOption = 2.0,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """Resume a cancelled or failed study, from a store or through a service.

    From a store (--db, the default): a new runner here keeps the finished trials, marks
    those its old runner left running failed, runs the rest, and exits as `run`. Through
    a service (--url or $STAGETUNE_URL): the service resumes it; --watch follows it."""
    chosen = output_format(format_, json_)
    url = service_or_store(ctx, url, db)
    if url:
        resume_through(url, token, study, chosen, interval if watch else None)
        return
    if watch:
        raise fail("--watch goes with --url: a resume from a store follows the study anyway")
    require("resume", "server", "worker")
    from stagetune.service.cli._local import resume_study

    resume_study(db, study, chosen)


def extend(
    ctx: typer.Context,
    study: Annotated[str, typer.Argument(help="a completed or stopped study")],
    epochs: Annotated[int, typer.Option(min=1, max=1_000_000, help=(
        "epochs more: refine goes on with them, then confirm runs again"))],
    seconds: Annotated[float | None, typer.Option(min=0.001, help=(
        "seconds more, for a study whose budget limits seconds too"))] = None,
    db: DbOption = None,
    url: Annotated[str | None, typer.Option(envvar="STAGETUNE_URL", help=(
        "extend it through this service instead (POST /api/studies/ID/extend); "
        "--db wins over $STAGETUNE_URL"))] = None,
    token: TokenOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help=(
        "with --url: follow the study to its end and exit with its exit code"))] = False,
    interval: IntervalOption = 2.0,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """Give a completed or stopped study more budget: refine goes on from every trial it
    ran, then confirm runs again. Nothing recorded changes.

    From a store (--db, the default) it runs here, as `resume` does; through a service
    (--url or $STAGETUNE_URL) the service runs it; --watch follows it."""
    chosen = output_format(format_, json_)
    url = service_or_store(ctx, url, db)
    if url:
        extend_through(url, token, study, epochs, seconds, chosen, interval if watch else None)
        return
    if watch:
        raise fail("--watch goes with --url: an extension from a store follows the study anyway")
    require("extend", "server", "worker")
    from stagetune.service.cli._local import extend_study_here

    extend_study_here(db, study, epochs, seconds, chosen)


def service_or_store(ctx: typer.Context, url: str | None, db: str | None) -> str | None:
    """The service to go through, or None for the store: both given is refused, unless the
    URL came from $STAGETUNE_URL, which an explicit --db overrides."""
    if url and db:
        # Typer vendors its own click in newer versions: the source's name, not its class
        if getattr(ctx.get_parameter_source("url"), "name", None) != "ENVIRONMENT":
            raise fail("give --db (a store here) or --url (a service), not both")
        return None
    return url


__all__ = ["extend", "resume", "run", "schema", "validate"]
