"""The commands that act on a running service: `submit`, `cancel`, `delete`, `model`,
`report`, and `resume` through it. All of them call it through `service.client.Client`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import RenderableType

from stagetune.service.cli._common import (
    ERROR,
    Format,
    FormatOption,
    JsonFlag,
    console,
    fail,
    one_line_errors,
    output_format,
    service_errors,
    show,
)
from stagetune.service.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[str, typer.Option(envvar="STAGETUNE_URL", help="the service's base URL")]
TokenOption = Annotated[str | None, typer.Option(envvar="STAGETUNE_TOKEN",
                                                 help="an API token (Bearer)")]
StudyArgument = Annotated[str, typer.Argument(help="a study's id (its spec's name)")]


def submit(
    spec: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")],
    url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """Submit a spec to a running service; prints the new study's id."""
    chosen = output_format(format_, json_)
    if not spec.is_file():
        raise fail(f"spec file {spec} does not exist")
    with service_errors(), Client(url, token) as api:
        study = api.submit(spec)
    show_reply(study, chosen, lambda s: f"submitted study [bold]{s.id}[/]")


def cancel(study: StudyArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Cancel a pending or running study; `resume` goes on with it later.

    It answers at once: the service stops the study's trials, and `status` shows it
    cancelled."""
    with service_errors(), Client(url, token) as api:
        data = api.cancel(study)
    console.print(f"study {data.id}: {data.status}")


def delete(
    study: StudyArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask first")] = False,
) -> None:
    """Delete a study that is not running, with its trials, curves and weights."""
    if not yes and not typer.confirm(f"delete study '{study}' with all its trials?"):
        raise fail("nothing deleted", 1)
    with service_errors(), Client(url, token) as api:
        api.delete(study)
    console.print(f"deleted study {study}")


def model(
    study: StudyArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="the zip file to write")],
    config: Annotated[int | None, typer.Option(
        min=0, help="a configuration on the confirmed front (stagetune front ID) instead of "
        "the winner")] = None,
    url: UrlOption = DEFAULT_URL, token: TokenOption = None,
) -> None:
    """Download the winner's model, or that of a configuration on the front, as a zip.

    The zip holds weights.pt (a torch state_dict) and model.json (the task and the
    parameters that rebuild the model)."""
    _writable(output)
    with service_errors(), Client(url, token) as api:
        if not api.study(study).weights:  # an unknown study is a 404 here, exit 2
            raise fail(f"study '{study}' has no winner's weights yet: they are kept when its "
                       "confirm stage finishes", ERROR)
        try:
            archive = api.model(study, config)
        except ApiError as exc:  # the study is there: its weights are not, no input error
            raise fail(str(exc), ERROR) from None
    _write(output, archive)
    console.print(f"model of [bold]{study}[/] written to {output} ({len(archive) / 1e3:.0f} kB)")


def report(
    study: StudyArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="the HTML file to write")],
    url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    db: Annotated[str | None, typer.Option(help="build it straight from this store's "
                                               "SQLAlchemy URL instead of asking a service")] = None,
) -> None:
    """Save a study as one self-contained HTML report (opens offline)."""
    _writable(output)
    if db:
        with one_line_errors(code=1):
            html = _report_from_store(db, study)
    else:
        with service_errors(), Client(url, token) as api:
            html = api.report(study)
    _write(output, html.encode())
    console.print(f"report on [bold]{study}[/] written to {output} ({len(html) / 1e6:.1f} MB)")


def resume_through(url: str, token: str | None, study: str, format_: Format,
                   watch: float | None) -> None:
    """`stagetune resume --url`: the service goes on with the study; with `watch` (seconds
    between polls), follow it to its end and exit with its exit code."""
    from stagetune.service.cli._reads import follow

    with service_errors(), Client(url, token) as api:
        data = api.resume(study)
        if watch is not None:
            raise typer.Exit(follow(api, study, format_, watch))
    show_reply(data, format_, lambda d: f"study {d.id}: {d.status} (resumed; follow it with "
                                        f"`stagetune status {d.id} --watch`)")


def extend_through(url: str, token: str | None, study: str, epochs: int, seconds: float | None,
                   format_: Format, watch: float | None) -> None:
    """`stagetune extend --url`: the service goes on with the study; with `watch`, follow it."""
    from stagetune.service.cli._reads import follow

    with service_errors(), Client(url, token) as api:
        data = api.extend(study, epochs, seconds)
        if watch is not None:
            raise typer.Exit(follow(api, study, format_, watch))
    show_reply(data, format_, lambda d: f"study {d.id}: {d.status} ({d.message}; follow it "
                                        f"with `stagetune status {d.id} --watch`)")


def show_reply(reply: BaseModel, format_: Format,
               table: Callable[[Any], RenderableType | None]) -> None:
    """`show` for the client's reply: JSON or YAML as the API gives it, or what `table`
    draws of the model."""
    show(reply if format_ is Format.table else reply.model_dump(mode="json"), format_, table)


def _writable(output: Path) -> None:
    if output.is_dir() or not output.parent.is_dir():
        raise fail(f"cannot write {output}: give a file in an existing folder")


def _write(output: Path, data: bytes) -> None:
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", ERROR) from None


def _report_from_store(db: str, study: str) -> str:
    import optuna

    from stagetune.service.web import render_report
    from stagetune.studies.store import Store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return render_report(Store(db, create=False), study)


__all__ = ["DEFAULT_URL", "StudyArgument", "TokenOption", "UrlOption", "cancel", "delete",
           "model", "report", "resume_through", "show_reply", "submit"]
