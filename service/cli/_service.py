"""`stagetune serve`: the REST API, and the settings every command that serves it reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from stagetune.service.cli._common import err_console, fail, one_line_errors, require

if TYPE_CHECKING:  # the settings load in the commands that serve: the others start quicker
    from stagetune.service.settings import Settings

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
    require("serve", "server", "worker")
    run_service(service_settings(host, port, db), demo=demo)


def service_settings(host: str | None, port: int | None, db: str | None) -> Settings:
    """The environment's settings with the command line's overrides; a bad one is one line."""
    from pydantic import ValidationError

    from stagetune.service.settings import Settings
    from stagetune.workers.config import describe_validation_error

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

    from stagetune.service.app import create_app
    from stagetune.workers import sidecar

    with one_line_errors():  # a broken plugin is one line now, not a failed start-up's traceback
        sidecar.start()  # the worker-code child: this process imports no torch (workers/sidecar.py)

    if not settings.tokens and settings.bind_host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] no STAGETUNE_API_TOKENS: anyone who can reach "
                          f"{settings.bind_host}:{settings.port} controls this service")
    elif not settings.tokens:
        err_console.print("no STAGETUNE_API_TOKENS: listening on 127.0.0.1 only "
                          "(set tokens, or --host, to accept other machines)")
    app = create_app(settings, on_ready=_submit_demo if demo else None)
    # its start-up lines and access log follow STAGETUNE_LOG_LEVEL and STAGETUNE_ACCESS_LOG;
    # X-Forwarded-* only from the proxies named (uvicorn's default believes 127.0.0.1, so
    # any local process could pick the client address the login's limit counts by)
    proxies = settings.forwarded_allow_ips.strip()
    uvicorn.run(app, host=settings.bind_host, port=settings.port, log_level=settings.log_level,
                access_log=settings.access_log, proxy_headers=bool(proxies),
                forwarded_allow_ips=proxies or None)


def _submit_demo(app: Any) -> None:
    from importlib.resources import as_file, files

    from stagetune.studies.search.stages import ORDER
    from stagetune.studies.spec.checks import load_spec_apart  # the API's process: no torch

    # examples/ installs as the package data stagetune.examples, in a wheel as in a checkout
    with as_file(files("stagetune.examples") / "digits.yaml") as path:
        spec = load_spec_apart(path)
    store = app.state.store
    if spec.name not in store.study_names():
        store.open_study(spec.name, spec.to_store(), list(ORDER))
    app.state.supervisor.kick()
    err_console.print(f"demo: study '{spec.name}' submitted; follow it with "
                      f"`stagetune status {spec.name}`")


__all__ = ["DbOption", "HostOption", "PortOption", "run_service", "serve", "service_settings"]
