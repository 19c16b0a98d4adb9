"""What every command shares: the consoles, output formats, exit codes, key=value parsing,
and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, RenderableType
from rich.markup import escape

from stagetune.service.client import ApiError
from stagetune.studies.reporting.numbers import readable
from stagetune.workers import StagetuneError

console = Console()
err_console = Console(stderr=True)

# Exit codes, the same for every command (documented in the README)
OK = 0
ERROR = 1  # anything else: the service unreachable or refusing, a study that failed
INPUT_ERROR = 2  # bad input: a spec, a flag, a file, a study name
GATE_STOPPED = 3  # a gate (data check, a probe, coarse) stopped the study
CANCELLED = 4  # the study was cancelled
STUDY_EXIT = {"completed": OK, "stopped": GATE_STOPPED, "cancelled": CANCELLED, "failed": ERROR}
ENDED = tuple(STUDY_EXIT)  # a study in one of these runs no more

# HTTP statuses that say the request itself was wrong (a name, a value, a spec)
INPUT_STATUSES = {400, 404, 405, 413, 415, 422}

# Modules of each extra (pyproject.toml says who needs which) that its commands cannot do
# without; a client-only install (`pip install stagetune`) has none of them.
EXTRA_MODULES = {"worker": ("torch", "torchvision", "sklearn"),
                 "server": ("fastapi", "ray", "optuna", "sqlalchemy")}


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


FormatOption = Annotated[Format | None, typer.Option(
    "--format", help="table (rounded, for people), json or yaml (full precision)",
    show_default="table")]
JsonFlag = Annotated[bool, typer.Option("--json", help="the same as --format json")]
IntervalOption = Annotated[float, typer.Option(min=0.2, help="--watch: seconds between refreshes")]


def output_format(format_: Format | None, json_: bool = False) -> Format:
    """The format asked for; `--json` stays as an alias of `--format json`."""
    if json_ and format_ not in (None, Format.json):
        raise fail(f"--json and --format {format_} ask for two formats: give one")
    return Format.json if json_ else format_ or Format.table


def show(data: Any, format_: Format, table: Callable[[Any], RenderableType | None]) -> None:
    """Print `data` as JSON or YAML, or as what `table` draws of it."""
    if format_ is Format.json:
        print_json(data)
    elif format_ is Format.yaml:
        print_yaml(data)
    else:
        drawn = table(data)
        if drawn is not None:
            console.print(drawn)


def fail(message: str, code: int = INPUT_ERROR) -> typer.Exit:
    """One line on stderr; raise what it returns. `message` is plain text, not markup."""
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def missing(*extras: str) -> list[str]:
    """The modules of `extras` this install lacks, found without importing any."""
    return [m for e in extras for m in EXTRA_MODULES[e] if importlib.util.find_spec(m) is None]


def require(command: str, *extras: str) -> None:
    """Exit 1 with one line saying what to install when this install lacks what `command`
    needs, rather than a traceback from deep inside it."""
    absent = missing(*extras)
    if absent:
        name = "all" if len(extras) > 1 else extras[0]
        raise fail(f"`stagetune {command}` needs stagetune[{name}], and {', '.join(absent)} "
                   f"{'is' if len(absent) == 1 else 'are'} not installed: "
                   f"pip install 'stagetune[{name}]'", ERROR)


@contextmanager
def one_line_errors(code: int = INPUT_ERROR) -> Iterator[None]:
    """The project's own errors become one line on stderr and exit `code`, never a traceback."""
    try:
        yield
    except StagetuneError as exc:
        raise fail(str(exc), code) from None


@contextmanager
def service_errors() -> Iterator[None]:
    """A call to the service that fails is one line: exit 2 when the service refused the
    input (an unknown study, a bad value), else 1 (unreachable, a conflict, its own error)."""
    try:
        yield
    except ApiError as exc:
        raise fail(str(exc), INPUT_ERROR if exc.status in INPUT_STATUSES else ERROR) from None
    except StagetuneError as exc:  # a spec file that cannot be read, before any call
        raise fail(str(exc), INPUT_ERROR) from None


def pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse key=value pairs; values are read as YAML scalars (0.1, true, [1, 2], adamw)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"{flag} takes key=value (got {item!r})")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def fmt(value: Any) -> str:
    """A value for a table, as on the pages: floats to three significant figures
    (studies.reporting.numbers), None as empty; JSON and YAML keep full precision."""
    return readable(value, missing="")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def print_yaml(obj: Any) -> None:
    plain = json.loads(json.dumps(obj, default=str))  # dates and paths as text, like JSON
    sys.stdout.write(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))


__all__ = ["CANCELLED", "ENDED", "ERROR", "GATE_STOPPED", "INPUT_ERROR", "OK", "STUDY_EXIT",
           "Format", "FormatOption", "IntervalOption", "JsonFlag", "console", "err_console", "fail",
           "fmt", "missing", "one_line_errors", "output_format", "pairs", "print_json",
           "print_yaml", "require", "service_errors", "show"]
