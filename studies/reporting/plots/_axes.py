"""Log axes that read. Left to itself Plotly labels the 2s and 5s between powers of ten
alike ("2, 0.1, 9, 8, 7" on a loss axis) and writes 1e-4 as "100μ". Here an axis that
spans a few decades is labelled at each power of ten (1e-5, 0.001, 0.01, 0.1), with
unlabelled minor ticks between where it is wide enough; a shorter one at 1, 2 and 5 times a power of ten, each
label written in full (0.02, 0.05, 0.1)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go

from stagetune.studies.reporting.numbers import sig

AXIS = re.compile(r"^([xy])axis(\d*)$")
# At least this many powers of ten inside the axis: label the decades alone.
DECADES = 3
STEPS = ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9))  # between decades: the first giving 3 ticks
PAD = 0.5  # decades either side of an axis's only value
WIDE = 0.5  # an axis at least this share of the figure's width gets minor ticks


def readable_log_axes(figure: go.Figure) -> go.Figure:
    """Set the ticks of every log axis of `figure` (see the module docstring)."""
    layout = figure.layout.to_plotly_json()
    for name, axis in layout.items():
        found = AXIS.match(name)
        if not found or not isinstance(axis, dict) or axis.get("type") != "log":
            continue
        low, high = _extent(figure, axis, found.group(1), found.group(2))
        if low is not None and low == high:  # one value (a parameter one trial drew)
            low, high = low - PAD, high + PAD
            figure.layout[name].update(range=[low, high])
        values = [] if low is None or high is None else _steps(low, high)
        if low is None or high is None or math.floor(high) - math.ceil(low) + 1 >= DECADES:
            figure.layout[name].update(dtick=1, exponentformat="e")
            domain = axis.get("domain") or [0, 1]
            if domain[1] - domain[0] >= WIDE:  # (in a narrow panel they blur into a bar)
                figure.layout[name].update(minor={"dtick": "D1", "ticks": "outside",
                                                  "ticklen": 3})
        elif len(values) >= 2:
            figure.layout[name].update(tickmode="array", tickvals=values,
                                       ticktext=[sig(v) for v in values])
        else:  # inside one step: Plotly's own ticks, each labelled in full
            figure.layout[name].update(exponentformat="e")
    return figure


def _extent(figure: go.Figure, axis: dict[str, Any], letter: str, number: str
            ) -> tuple[float | None, float | None]:
    """The axis's range in log10 units: its own, else that of the data drawn on it."""
    if axis.get("range") and None not in axis["range"]:
        low, high = axis["range"]
        return float(min(low, high)), float(max(low, high))
    ref = letter + number
    values = [v for trace in figure.data
              if f"{letter}axis" in trace and (trace[f"{letter}axis"] or letter) == ref
              for v in _positive(trace[letter])]
    if not values:
        return None, None
    return math.log10(min(values)), math.log10(max(values))


def _positive(values: Any) -> Iterable[float]:
    if values is None:
        return
    for v in values:
        if isinstance(v, list | tuple):  # a contour's or heatmap's rows
            yield from _positive(v)
        elif isinstance(v, int | float) and not isinstance(v, bool) and v > 0 \
                and math.isfinite(v):
            yield float(v)


def _steps(low: float, high: float) -> list[float]:
    """1-2-5 (else 1 to 9) times the powers of ten, those inside [10^low, 10^high]."""
    values: list[float] = []
    for mantissas in STEPS:
        values = [float(f"{m}e{e}") for e in range(math.floor(low), math.ceil(high) + 1)
                  for m in mantissas if low <= math.log10(m) + e <= high]
        if len(values) >= 3:
            break
    return values
