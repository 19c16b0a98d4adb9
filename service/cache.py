"""A one-second cache for reads that rarely makes a reader wait for a refresh.

Dashboards and scripts poll the same study many times a second. A value older than
`ttl` is still served while one background thread recomputes it (stale-while-
revalidate), so recomputing a 10,000-trial study never stalls the requests queued
behind it. A value older than `max_age` is never served: after a quiet spell the
first read computes afresh in the request, as a key's first read does. So a reader
sees data at most `max_age` seconds old (counted from when its computation began).
Writes through the API clear the cache, so a client sees its own change at once; a
computation that began before a clear is not kept. Keys name a study by its identity
(`studies.store.study_identity`), so a study deleted and created again never meets the
old one's values.
(cachetools' TTLCache evicts; it has no refresh-in-background, hence this small class.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class ReadCache:
    def __init__(self, ttl: float = 1.0, max_age: float = 5.0, maxsize: int = 512) -> None:
        self.ttl, self.max_age, self.maxsize = ttl, max_age, maxsize
        self._entries: dict[Hashable, tuple[float, Any]] = {}  # key -> (computed at, value)
        self._refreshing: set[Hashable] = set()
        self._generation = 0  # counts clears: what began before one is not kept
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value for `key`: computed now on a first read or once the cached one is
        older than `max_age` (an error is raised, not cached), else the cached one,
        refreshed in the background once it is older than `ttl`."""
        now = time.monotonic()
        with self._lock:
            generation = self._generation
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] > self.max_age:
                entry = None
            stale = entry is not None and now - entry[0] > self.ttl
            if stale and key not in self._refreshing:
                self._refreshing.add(key)
                threading.Thread(target=self._refresh, args=(key, compute, generation),
                                 daemon=True).start()
        if entry is not None:
            return entry[1]  # type: ignore[no-any-return]
        value = compute()
        self._store(key, value, now, generation)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def _refresh(self, key: Hashable, compute: Callable[[], Any], generation: int) -> None:
        try:
            began = time.monotonic()
            self._store(key, compute(), began, generation)
        except Exception as exc:  # the next read computes it again and sees the error
            log.warning("refreshing %s failed: %s", key, exc)
            with self._lock:
                self._entries.pop(key, None)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _store(self, key: Hashable, value: Any, began: float, generation: int) -> None:
        """Keep `value`, dated from when its computation `began` (what it read may have
        changed while it ran); not when the cache was cleared meanwhile (a write it may
        not have seen)."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= self.maxsize and key not in self._entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest insertion
            self._entries[key] = (began, value)
