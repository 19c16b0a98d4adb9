"""What the cluster's nodes offer, as the service last saw it: submit checks a spec's
resources against it without waiting on Ray (a request never blocks on a Ray call)."""

from __future__ import annotations

import logging
import threading

from stagetune.studies.planning.capacity import node_resources

log = logging.getLogger(__name__)


class ClusterView:
    """The live nodes' resources, read at `start` and every `interval` seconds after, in a
    thread of its own. None until a first read succeeds (then submit checks nothing)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._nodes: list[dict[str, float]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cluster-view", daemon=True)

    def start(self) -> None:
        self._read()  # before the first request: a submit at once is checked too
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def nodes(self) -> list[dict[str, float]] | None:
        return self._nodes

    def fresh(self) -> list[dict[str, float]] | None:
        """Read the nodes now: before a refusal, as a node may have joined since the last
        read (a worker started a moment before the submit)."""
        self._read()
        return self._nodes

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def _read(self) -> None:
        try:
            self._nodes = node_resources()
        except Exception as exc:  # Ray unreachable for a moment: keep what was seen
            log.warning("cannot read the cluster's nodes: %s", exc)
