"""A limit on failed logins per client, so that tokens cannot be guessed at speed.

In-process on purpose: the service is one process, and what `limits` or `slowapi` would
add over this (shared storages such as Redis, limit strings, decorators) is nothing the
login needs; their memory storage keeps the same per-process state."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class FailureLimiter:
    """At most `max_failures` in any `window_s` seconds per key (a client address)."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 10_000) -> None:
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may now."""
        with self._lock:
            recent = self._recent(key, time.monotonic())
            if len(recent) < self.max_failures:
                return 0
            return max(1, math.ceil(recent[0] + self.window_s - time.monotonic()))

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if key not in self._failures and len(self._failures) >= self.max_keys:
                self._forget_quiet(now)
            self._recent(key, now).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        return recent

    def _forget_quiet(self, now: float) -> None:
        """Bound the memory a flood of addresses can take: drop keys with no recent failure."""
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window_s]:
            del self._failures[key]
