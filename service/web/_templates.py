"""One Jinja2 environment for the pages and the report; plotly.js from the plotly package."""

from __future__ import annotations

import functools
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly
from fastapi.templating import Jinja2Templates

from stagetune.studies.reporting.edits import condition, edit_value
from stagetune.studies.reporting.numbers import FIGURES, readable

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def number(value: Any, figures: int = FIGURES) -> str:
    """A number on a page: three significant figures (studies.reporting.numbers); NaN and
    infinities, which the store keeps as measured, as a dash."""
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return readable(value, figures)


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


@functools.cache
def templates() -> Jinja2Templates:
    out = Jinja2Templates(directory=str(HERE / "templates"))
    out.env.filters["number"] = number
    out.env.filters["edit"] = edit_value  # a suggested spec edit's value: "0.00807–0.242, log"
    out.env.filters["condition"] = condition  # the case it is for: "optimizer sgd"
    out.env.filters["iso"] = iso
    return out


@functools.cache
def plotly_js() -> str:
    return PLOTLY_JS.read_text(encoding="utf-8")
