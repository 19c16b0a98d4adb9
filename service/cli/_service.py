"""`stagetune serve`, and `submit`, `status`, `cancel` against a running service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from service.cli._common import JsonFlag, console, err_console, fail, one_line_errors, print_json
from service.client import Client
from service.settings import Settings
from workers.config import describe_validation_error

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UrlOption = Annotated[str, typer.Option(envvar="STAGETUNE_URL", help="the service's base URL")]
TokenOption = Annotated[str | None, typer.Option(envvar="STAGETUNE_TOKEN",
                                                 help="an API token (Bearer)")]
HostOption = Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1, or "
                                                     "0.0.0.0 when API tokens are set)")]
PortOption = Annotated[int | None, typer.Option(help="port (default $STAGETUNE_PORT or 8000)")]
DbOption = Annotated[str | None, typer.Option(help="SQLAlchemy URL of the store")]


def serve(
    host: HostOption = None,
    port: PortOption = None,
    db: DbOption = None,
    demo: Annotated[bool, typer.Option(help="submit examples/digits.yaml once it is up")] = False,
) -> None:
    """Serve the REST API (and run studies on Ray: $RAY_ADDRESS, else a local Ray)."""
    run_service(service_settings(host, port, db), demo=demo)


def service_settings(host: str | None, port: int | None, db: str | None) -> Settings:
    """The environment's settings with the command line's overrides; a bad one is one line."""
    overrides: dict[str, Any] = {k: v for k, v in
                                 {"host": host, "port": port, "database_url": db}.items()
                                 if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:  # a bad STAGETUNE_* variable
        raise fail(describe_validation_error(exc)) from None


def run_service(settings: Settings, demo: bool = False) -> None:
    """Serve the API until SIGTERM or Ctrl-C."""
    import uvicorn

    from service.app import create_app

    if not settings.tokens and settings.bind_host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] no STAGETUNE_API_TOKENS: anyone who can reach "
                          f"{settings.bind_host}:{settings.port} controls this service")
    elif not settings.tokens:
        err_console.print("no STAGETUNE_API_TOKENS: listening on 127.0.0.1 only "
                          "(set tokens, or --host, to accept other machines)")
    app = create_app(settings, on_ready=_submit_demo if demo else None)
    uvicorn.run(app, host=settings.bind_host, port=settings.port, log_level="warning")


def _submit_demo(app: Any) -> None:
    from studies.spec import load_spec
    from studies.stages import ORDER

    spec = load_spec(EXAMPLES / "digits.yaml")
    store = app.state.store
    if spec.name not in store.study_names():
        store.open_study(spec.name, spec.model_dump(mode="json"), list(ORDER))
    app.state.supervisor.kick()
    err_console.print(f"demo: study '{spec.name}' submitted; follow it with "
                      f"`stagetune status {spec.name}`")


def submit(
    spec: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")],
    url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None, json_: JsonFlag = False,
) -> None:
    """Submit a spec to a running service; prints the new study's id."""
    if not spec.is_file():
        raise typer.Exit(_fail(f"spec file {spec} does not exist"))
    with one_line_errors(code=1), Client(url, token) as api:
        study = api.submit(spec)
    print_json(study) if json_ else console.print(f"submitted study [bold]{study['id']}[/]")


def status(
    study: Annotated[str | None, typer.Argument(help="a study id; all studies without one")] = None,
    url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None, json_: JsonFlag = False,
) -> None:
    """Show one study's stages, or list every study."""
    with one_line_errors(code=1), Client(url, token) as api:
        data = api.study(study) if study else api.studies(limit=500)
    if json_:
        print_json(data)
    elif study:
        table = Table("stage", "status", "verdict", "what it found",
                      title=f"study {data['id']}: {data['status']}")
        for stage in data["stages"]:
            table.add_row(stage["name"], stage["status"], stage["verdict"] or "", stage["message"])
        console.print(table)
        if data["best"]:
            console.print(f"best value {data['best']['value']}, params {data['best']['params']}")
    else:
        table = Table("study", "status", "stage", "best", "baseline")
        for item in data["items"]:
            table.add_row(item["id"], item["status"], item["current_stage"] or "",
                          str(item["best_value"] or ""), str(item["baseline"] or ""))
        console.print(table)


def cancel(
    study: Annotated[str, typer.Argument(help="the study to cancel")],
    url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None,
) -> None:
    """Cancel a pending or running study (resume it later with the API). It answers at
    once: the service stops the study's trials, and `status` shows it cancelled."""
    with one_line_errors(code=1), Client(url, token) as api:
        data = api.cancel(study)
    console.print(f"study {data['id']}: {data['status']}")


def report(
    study: Annotated[str, typer.Argument(help="the study to report on")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the HTML file to write")],
    url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None,
    db: Annotated[str | None, typer.Option(help="build it straight from this store's "
                                               "SQLAlchemy URL instead of asking a service")] = None,
) -> None:
    """Save a study as one self-contained HTML report (opens offline)."""
    if output.is_dir() or not output.parent.is_dir():
        raise typer.Exit(_fail(f"cannot write {output}: give a file in an existing folder"))
    with one_line_errors(code=1):
        if db:
            html = _report_from_store(db, study)
        else:
            with Client(url, token) as api:
                html = api.report(study)
    output.write_text(html, encoding="utf-8")
    console.print(f"report on [bold]{study}[/] written to {output} ({len(html) / 1e6:.1f} MB)")


def _report_from_store(db: str, study: str) -> str:
    import optuna

    from service.web import render_report
    from studies.store import Store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return render_report(Store(db, create=False), study)


def _fail(message: str) -> int:
    err_console.print(f"[red]error:[/] {message}")
    return 2


__all__ = ["cancel", "run_service", "serve", "service_settings", "status", "submit"]
