"""Figures as Plotly JSON, drawn again only when their study changed.

A finished study's figures never change, so each is drawn once per process; a running
study's whenever a stage or trial finishes, and at most every few seconds while epochs
arrive (`PlotSource.version`). (cachetools keys on arguments only, not on a version
read from the store, hence this small class.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from stagetune.studies.reporting.plots import PlotSource, create_plot, plot_kind
from stagetune.studies.store import Store


class FigureCache:
    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, tuple[Any, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, study: str, kind: str, **options: Any) -> str:
        """The figure `kind` of `study` as Plotly JSON (unknown kind or study: not found)."""
        plot_kind(kind)
        source = PlotSource.load(store, study)
        # the creation time tells a study deleted and created again under its name apart
        key = (study, source.record.created_at, kind, tuple(sorted(options.items())))
        version = source.version()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(key)
                return entry[1]
        body: str = create_plot(kind, source, **options).to_json()
        with self._lock:
            self._entries[key] = (version, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return body

    def drop(self, study: str) -> None:
        """Forget a study's figures (it was deleted, or its name reused)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == study]:  # type: ignore[index]
                del self._entries[key]
