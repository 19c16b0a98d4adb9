"""Numbers as people read them: three significant figures in sentences, tables and suggested
spec edits. What is stored and what the API returns stay exact; only the text is rounded.

The dashboard's script rounds the same way (`sig` in service/web/static/dashboard.js).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FIGURES = 3
# Outside [1e-4, 1e6) a number reads better as 1.5e-5 than as 0.000015 or 12300000.
SMALL, LARGE = -4, 6


def sig(value: float, figures: int = FIGURES) -> str:
    """`value` to `figures` significant figures, as short as it reads: 0.2420128 -> "0.242",
    0.008067 -> "0.00807", 150.0 -> "150", 12345.6 -> "12300", 1.5e-05 -> "1.5e-5"."""
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    rounded = float(f"{value:.{figures}g}")
    if rounded == 0:
        return "0"
    exponent = math.floor(math.log10(abs(rounded)))
    if SMALL <= exponent < LARGE:  # the shortest text of the rounded float is its digits
        return str(int(rounded)) if rounded.is_integer() else repr(rounded)
    mantissa = f"{rounded / 10 ** exponent:.{figures - 1}f}".rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def readable(value: Any, figures: int = FIGURES, missing: str = "–") -> str:
    """Any value for a page or a terminal: floats through `sig`, whole numbers as they are,
    booleans as in a spec (true/false), None as `missing`, lists and mappings item by item."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return sig(value, figures)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(readable(v, figures, missing) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {readable(v, figures, missing)}"
                               for k, v in value.items()) + "}"
    return str(value)


def span(low: float, high: float, log: bool = False) -> str:
    """A range as a person writes it: "0.00807–0.242, log"."""
    return f"{readable(low)}–{readable(high)}{', log' if log else ''}"
