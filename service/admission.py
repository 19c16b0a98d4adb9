"""Which pending studies may start now: the queue in front of the runners.

Each running study has a runner process of its own (some 275 MB, on the head node), so
their number is bounded: STAGETUNE_MAX_RUNNING_STUDIES, by default what the cluster can
serve (`default_limit`). The other pending studies wait, with no process, in the order
they were queued, and say why and where they are in the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1024**3
SETTING = "STAGETUNE_MAX_RUNNING_STUDIES"


def default_limit(cluster_cpus: float, head_memory_bytes: float) -> int:
    """One running study per CPU of the cluster (its trials need one at least: more studies
    than CPUs only wait for each other's trials) and per GiB of memory Ray has on the head
    node (every runner lives there), whichever is fewer; at least one."""
    return max(1, min(int(cluster_cpus), int(head_memory_bytes // GIB)))


@dataclass(frozen=True)
class Admission:
    start: list[str]  # may start now, first queued first
    waiting: dict[str, str]  # must wait: study -> why, and its place in the queue


def admit(queue: Sequence[str], busy: int, limit: int) -> Admission:
    """`queue`: the pending studies that have no runner yet, first queued first; `busy`:
    the studies holding a runner (running, being cancelled, starting, or ending)."""
    free = max(0, limit - busy)
    waiting = queue[free:]
    return Admission(list(queue[:free]), {name: queued_message(limit, place, len(waiting))
                                          for place, name in enumerate(waiting, 1)})


def queued_message(limit: int, place: int, waiting: int) -> str:
    runs = "1 study runs" if limit == 1 else f"{limit} studies run"
    return f"queued: {runs} at once ({SETTING}); position {place} of {waiting}"
