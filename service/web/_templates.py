"""One Jinja2 environment for the pages and the report; plotly.js from the plotly package."""

from __future__ import annotations

import functools
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else "–"
    return "–" if value is None else str(value)


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


@functools.cache
def templates() -> Jinja2Templates:
    out = Jinja2Templates(directory=str(HERE / "templates"))
    out.env.filters["number"] = number
    out.env.filters["iso"] = iso
    return out


@functools.cache
def plotly_js() -> str:
    return PLOTLY_JS.read_text(encoding="utf-8")
