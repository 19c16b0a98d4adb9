"""The read cache: stale values are served while one refresh runs; errors are not kept."""

from __future__ import annotations

import threading
import time

import pytest

from stagetune.service.cache import ReadCache


def test_a_stale_value_is_served_while_one_background_refresh_runs() -> None:
    cache = ReadCache(ttl=0.05)
    calls: list[int] = []
    release = threading.Event()

    def slow() -> int:
        calls.append(1)
        if len(calls) > 1:
            release.wait(5)
        return len(calls)

    assert cache.get("k", slow) == 1
    time.sleep(0.1)
    started = time.monotonic()
    assert [cache.get("k", slow) for _ in range(20)] == [1] * 20  # stale, at once
    assert time.monotonic() - started < 1 and len(calls) == 2  # one refresh, not twenty
    release.set()
    deadline = time.monotonic() + 5
    while cache.get("k", slow) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("k", slow) == 2


def test_an_error_is_raised_on_a_first_read_and_never_cached() -> None:
    cache = ReadCache(ttl=10)

    def broken() -> int:
        raise LookupError("no such study")

    with pytest.raises(LookupError):
        cache.get("k", broken)
    assert cache.get("k", lambda: 3) == 3
    cache.clear()
    assert cache.get("k", lambda: 4) == 4


def test_after_a_quiet_spell_a_read_never_gets_a_value_older_than_max_age() -> None:
    cache = ReadCache(ttl=0.05, max_age=0.3)
    version = [1]
    assert cache.get("k", lambda: version[0]) == 1
    version[0] = 2
    time.sleep(0.4)  # quiet: no read refreshed it in the background
    assert cache.get("k", lambda: version[0]) == 2  # computed in the request, not served stale


def test_a_value_computed_across_a_clear_is_not_kept() -> None:
    """A read that began before a write (which clears the cache) may hold what the write
    replaced: it answers its own request, and the next read computes again."""
    cache = ReadCache(ttl=10)
    began, release = threading.Event(), threading.Event()

    def old() -> str:
        began.set()
        release.wait(5)
        return "before the delete"

    reader = threading.Thread(target=cache.get, args=("k", old))
    reader.start()
    began.wait(5)
    cache.clear()  # the write
    release.set()
    reader.join(5)
    assert cache.get("k", lambda: "after the delete") == "after the delete"
