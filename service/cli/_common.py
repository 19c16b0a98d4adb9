"""What every command shares: the consoles, key=value parsing, and one-line errors."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from workers import StagetuneError

console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]

INPUT_ERROR = 2  # bad input: a spec, a flag, a name; also "a gate stopped the study"


def fail(message: str, code: int = INPUT_ERROR) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


@contextmanager
def one_line_errors(code: int = INPUT_ERROR) -> Iterator[None]:
    """The project's own errors become one line on stderr and exit `code`, never a traceback."""
    try:
        yield
    except StagetuneError as exc:
        raise fail(escape(str(exc)), code) from None


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
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) and value != int(value) else str(value)
    return str(value)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def escape(text: str) -> str:
    return text.replace("[", r"\[")
