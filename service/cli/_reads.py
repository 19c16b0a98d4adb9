"""The commands that read a running service: `status` (and `status --watch`), `trials`
and `best`, each as a table with numbers to three significant figures, or as JSON or YAML."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stagetune.service.cli._common import (
    ENDED,
    STUDY_EXIT,
    Format,
    FormatOption,
    IntervalOption,
    JsonFlag,
    console,
    err_console,
    fail,
    fmt,
    output_format,
    service_errors,
    show,
)
from stagetune.service.cli._remote import (
    DEFAULT_URL,
    StudyArgument,
    TokenOption,
    UrlOption,
    show_reply,
)
from stagetune.service.client import Client
from stagetune.service.schemas import Page, StudyDetail, StudySummary, TrialOut

COLOURS = {"passed": "green", "warned": "yellow", "failed": "red", "skipped": "dim"}


def status(
    study: Annotated[str | None, typer.Argument(help="a study id; all studies without one")] = None,
    url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    format_: FormatOption = None, json_: JsonFlag = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help=(
        "refresh until the study ends, then exit with its exit code: 0 completed, "
        "3 stopped by a gate, 4 cancelled, 1 failed"))] = False,
    interval: IntervalOption = 2.0,
) -> None:
    """Show one study's stages, or list every study."""
    chosen = output_format(format_, json_)
    if watch and not study:
        raise fail("--watch follows one study: give its id")
    with service_errors(), Client(url, token) as api:
        if watch:
            raise typer.Exit(follow(api, study or "", chosen, interval))
        data = api.study(study) if study else api.studies(limit=500)
    show_reply(data, chosen, study_view if study else studies_table)


def follow(api: Client, study: str, format_: Format, interval: float = 2.0) -> int:
    """Poll the study until it ends; its exit code. A table is redrawn live on a terminal;
    elsewhere, and as JSON or YAML, only the end is printed. Ctrl-C stops following, not
    the study."""
    live = format_ is Format.table and console.is_terminal
    data = api.study(study)
    try:
        if live:
            with Live(study_view(data), console=console, auto_refresh=False) as display:
                while data.status not in ENDED:
                    time.sleep(interval)
                    data = api.study(study)
                    display.update(study_view(data), refresh=True)
        else:
            while data.status not in ENDED:
                time.sleep(interval)
                data = api.study(study)
    except KeyboardInterrupt:
        err_console.print(f"stopped following; study {study} goes on "
                          f"(`stagetune cancel {study}` stops it)")
        return 130
    if not live:
        show_reply(data, format_, study_view)
    if format_ is Format.table and data.status != "completed" and data.message:
        err_console.print(f"[bold]{data.status}:[/] {escape(data.message)}", soft_wrap=True)
    return STUDY_EXIT[data.status]


def trials(
    study: StudyArgument,
    stage: Annotated[str | None, typer.Option(help="coarse, refine or confirm")] = None,
    state: Annotated[str | None, typer.Option(
        help="running, complete, pruned, failed or waiting")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help=(
        "filter terms, all of which must match: `lr<0.01`, `epochs>=3`, or text found in "
        "a parameter, the status or the reason"))] = None,
    sort: Annotated[str | None, typer.Option(help=(
        "number, stage, state, value, duration, epochs, or a parameter as param:NAME"))] = None,
    order: Annotated[str | None, typer.Option(help="asc or desc")] = None,
    offset: Annotated[int, typer.Option(min=0, help="trials to skip")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500, help="trials on the page")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="every trial, not one page")] = False,
    url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """List a study's trials: filter, sort, a page at a time.

    Filter by stage, state or a query, sort by a column. JSON and YAML print the page as
    the API gives it (items, total, offset, limit)."""
    chosen = output_format(format_, json_)
    if order is not None and order not in ("asc", "desc"):
        raise fail(f"--order takes asc or desc (got {order!r})")
    filters = {"stage": stage, "state": state, "q": query, "sort": sort, "order": order}
    with service_errors(), Client(url, token) as api:
        if all_:
            items = list(api.all_trials(study, **filters))
            page = Page[TrialOut](items=items, total=len(items), offset=0, limit=len(items))
        else:
            page = api.trials(study, offset=offset, limit=limit, **filters)
    show_reply(page, chosen, lambda p: trials_table(study, p))


def best(
    study: StudyArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """Show the best configuration found so far.

    Its value, the stage it came from, and its parameters (the fixed ones included)."""
    chosen = output_format(format_, json_)
    with service_errors(), Client(url, token) as api:
        data = api.study(study)
    if not data.best:
        raise fail(f"study '{study}' ({data.status}) has no best configuration yet", 1)
    found = {"study": data.id, "status": data.status, **data.best.model_dump(mode="json"),
             "params": {**data.spec.get("fixed", {}), **data.best.params},
             "baseline": data.baseline}
    show(found, chosen, best_table)


def front(
    study: StudyArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None,
    format_: FormatOption = None, json_: JsonFlag = False,
) -> None:
    """Show the front of a study with several objectives (task.objectives).

    Confirm's configurations on it, with each objective's mean and spread over the seeds,
    then refine's trials on it. `stagetune model ID --config N -o FILE` downloads the one
    you pick."""
    chosen = output_format(format_, json_)
    with service_errors(), Client(url, token) as api:
        data = api.front(study)
    show({"study": study, **data.model_dump(mode="json")}, chosen, front_table)


# -- tables ----------------------------------------------------------------------------


def study_view(data: StudyDetail) -> RenderableType:
    table = Table("stage", "status", "verdict", "epochs", "what it found",
                  title=f"study {escape(data.id)}: {data.status}")
    for stage in data.stages:
        verdict = stage.verdict or ""
        table.add_row(stage.name, stage.status,
                      f"[{COLOURS.get(verdict, 'white')}]{verdict}[/]" if verdict else "",
                      fmt(stage.epochs), escape(stage.message))
    lines: list[RenderableType] = [table]
    if data.status in ("pending", "running", "cancelling") and data.message:  # the
        # queue's position, say (an ended study's message is printed by `follow` and `run`)
        lines.append(f"{data.status}: {escape(data.message)}")
    if data.best:
        baseline = f" (linear baseline {fmt(data.baseline)})" if data.baseline else ""
        lines.append(f"best value {fmt(data.best.value)}{baseline}, params "
                     + escape(", ".join(f"{k}={fmt(v)}" for k, v in data.best.params.items())))
    return Group(*lines)


def studies_table(data: Page[StudySummary]) -> RenderableType:
    table = Table("study", "status", "stage", "best", "baseline", "trials")
    for item in data.items:
        table.add_row(escape(item.id), item.status, item.current_stage or "",
                      fmt(item.best_value), fmt(item.baseline), str(sum(item.trials.values())))
    return table


def trials_table(study: str, page: Page[TrialOut]) -> RenderableType:
    items = page.items
    params = list(dict.fromkeys(name for t in items for name in t.params))
    table = Table("#", "stage", "state", "value", "epochs", "seconds", *params,
                  title=f"study {escape(study)}: trials")
    for t in items:
        table.add_row(str(t.number), t.stage, t.status or t.state, fmt(t.value),
                      fmt(t.epochs), fmt(t.seconds),
                      *(escape(fmt(t.params.get(p))) for p in params))
    first, last = page.offset + 1, page.offset + len(items)
    table.caption = (f"{first}-{last} of {page.total}" if items else f"none of {page.total}")
    if last < page.total:
        table.caption += f"; next page: --offset {last}"
    return table


def best_table(found: dict[str, Any]) -> RenderableType:
    stage = f" in {found['stage']}" if found["stage"] else ""
    table = Table("parameter", "value")
    for name, value in found["params"].items():
        table.add_row(escape(name), escape(fmt(value)))
    return Group(f"study {escape(found['study'])} ({found['status']}): best value "
                 f"{fmt(found['value'])}{stage}", table)


def front_table(found: dict[str, Any]) -> RenderableType:
    names = [o["name"] for o in found["objectives"]]
    confirmed = Table("config", *names, "seeds", "parameters",
                      title=f"study {escape(found['study'])}: confirmed front (mean ± spread)")
    for c in found["confirmed"]:
        confirmed.add_row(str(c["config"]), *(f"{fmt(c['means'][n])} ± {fmt(c['std'][n])}"
                                              for n in names),
                          str(c["seeds"]), _params(c["params"]))
    refine = Table("trial", *names, "parameters", title="refine's front")
    for p in found["refine"]:
        refine.add_row(str(p["trial"]), *(fmt(p["values"][n]) for n in names),
                       _params(p["params"]))
    parts: list[RenderableType] = [confirmed, refine]
    if found["note"]:
        parts.append(escape(found["note"]))
    return Group(*parts)


def _params(params: dict[str, Any]) -> str:
    return escape(", ".join(f"{name}={fmt(value)}" for name, value in params.items()))


__all__ = ["best", "follow", "front", "status", "trials"]
