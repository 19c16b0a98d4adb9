"""A one-second cache for reads. Dashboards and scripts poll the same study many times a
second; serving a 10,000-trial study at hundreds of requests per second costs at most
one second of staleness. Writes through the API clear it, so a client sees its own
change at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from cachetools import TTLCache

T = TypeVar("T")
_MISSING = object()


class ReadCache:
    def __init__(self, ttl: float = 1.0, maxsize: int = 512) -> None:
        self._entries: TTLCache[Hashable, Any] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for `key`, else `compute()` (an error is not cached)."""
        with self._lock:
            value = self._entries.get(key, _MISSING)
        if value is _MISSING:
            value = compute()
            with self._lock:
                self._entries[key] = value
        return value  # type: ignore[no-any-return]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
