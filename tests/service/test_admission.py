"""The admission rule: which pending studies may start now, and what the others are told."""

from __future__ import annotations

import pytest

from stagetune.service.admission import GIB, admit, default_limit

QUEUE = ["a", "b", "c", "d"]


@pytest.mark.parametrize(("busy", "limit", "start"), [
    (0, 1, ["a"]),  # an idle service: the first queued starts
    (0, 3, ["a", "b", "c"]),
    (0, 8, QUEUE),  # room for all
    (1, 3, ["a", "b"]),  # one runs already
    (3, 3, []),  # full: all wait
    (5, 3, []),  # the limit was lowered below what runs: none starts, none is stopped
])
def test_the_first_queued_start_as_far_as_the_limit_allows(busy: int, limit: int,
                                                           start: list[str]) -> None:
    admission = admit(QUEUE, busy, limit)
    assert admission.start == start
    assert list(admission.waiting) == QUEUE[len(start):]  # in queue order, none lost


def test_who_waits_is_told_why_and_where() -> None:
    admission = admit(QUEUE, busy=1, limit=2)
    assert admission.waiting == {
        "b": "queued: 2 studies run at once (STAGETUNE_MAX_RUNNING_STUDIES); position 1 of 3",
        "c": "queued: 2 studies run at once (STAGETUNE_MAX_RUNNING_STUDIES); position 2 of 3",
        "d": "queued: 2 studies run at once (STAGETUNE_MAX_RUNNING_STUDIES); position 3 of 3"}
    assert admit(["x", "y"], busy=1, limit=1).waiting["y"] == (
        "queued: 1 study runs at once (STAGETUNE_MAX_RUNNING_STUDIES); position 2 of 2")


def test_an_empty_queue_starts_nothing() -> None:
    admission = admit([], busy=0, limit=4)
    assert admission.start == [] and admission.waiting == {}


@pytest.mark.parametrize(("cpus", "memory", "limit"), [
    (2, 12 * GIB, 2),  # this machine: one per CPU
    (2.5, 12 * GIB, 2),  # a fraction of a CPU runs no more
    (64, 8 * GIB, 8),  # a big cluster, a small head: one per GiB of the head's memory
    (0, 8 * GIB, 1),  # no worker has joined yet: one still starts (its trials wait)
    (16, 0.5 * GIB, 1),  # at least one
])
def test_the_default_limit_is_what_the_cluster_can_serve(cpus: float, memory: float,
                                                         limit: int) -> None:
    assert default_limit(cpus, memory) == limit
