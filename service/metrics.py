"""`/metrics` in the Prometheus text format (prometheus-client).

Two kinds of series:

- the requests this process served, counted and timed by `RequestMetrics`, labelled by
  method, route template (`/api/studies/{study_id}`, never the raw path: the label set
  stays bounded however many studies there are) and status;
- the store's view of the work, read at each scrape (`StoreCollector`): studies by status,
  running trials, the trials finished per second over the last minute, and queue waits.
  The store is the truth, and runners live in other processes, so nothing is counted
  here that a restart would lose.

With STAGETUNE_API_TOKENS set, a scrape needs a token like any API call (Prometheus sends
one with `authorization: {credentials_file: ...}`); study counts are the operator's
business, not the network's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from optuna.trial import FrozenTrial, TrialState
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stagetune.studies.store import Store

log = logging.getLogger(__name__)

STATUSES = ("pending", "running", "cancelling", "completed", "stopped", "cancelled", "failed")
ACTIVE = ("running", "cancelling")  # studies whose runner may have trials running
WINDOW_S = 60.0  # trials per second and trial queue waits are over this last stretch
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404)

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "The Prometheus text format"}})
def metrics(request: Request) -> Response:
    """Request counts and latencies, studies by status, running trials, trials finished
    per second, and queue waits, in the Prometheus text format."""
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """A registry of the app's own (two apps in one process never share series), the
    request middleware (outermost: it sees every answer, a 413 or a 403 too), and the
    store's gauges."""
    registry = CollectorRegistry()
    app.state.metrics = registry
    registry.register(StoreCollector(app))
    requests = Counter("stagetune_http_requests", "HTTP requests served",
                       ("method", "route", "status"), registry=registry)
    latency = Histogram("stagetune_http_request_duration_seconds",
                        "Time to answer an HTTP request", ("method", "route"), registry=registry)
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)


class RequestMetrics:
    """Counts and times each HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 500  # what the client gets when the app raises

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_template(scope)
            self.latency.labels(method, route).observe(time.perf_counter() - started)
            self.requests.labels(method, route, str(status)).inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that served `scope`, read once the app has routed
    it: `/api/studies/{study_id}`, a mounted app's as `/static/{path}`; else UNMATCHED.
    A route knows its path within its router only, so the routers' prefixes are the part
    of the request's path before the tail that the route's own pattern matches (the
    leftmost such tail: a prefix never takes in a parameter's value)."""
    route = scope.get("route")
    path = scope.get("path", "")
    pattern = getattr(route, "path_regex", None)
    if route is not None and pattern is not None:
        for cut in (i for i, char in enumerate(path) if char == "/"):
            if pattern.match(path[cut:]):
                return f"{path[:cut]}{route.path}"
        return str(route.path)
    mounted = scope.get("root_path", "")[len(scope.get("app_root_path", "")):]
    if "app_root_path" in scope and mounted:
        return f"{mounted}/{{path}}"
    return UNMATCHED


# -- the store's gauges -----------------------------------------------------------------


@dataclass
class Snapshot:
    """What one scrape read from the store."""

    studies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    running_trials: int = 0
    finished_recently: int = 0  # trials finished in the last WINDOW_S
    queue_waits: list[float] = field(default_factory=list)  # of those, asked -> worker began
    oldest_pending_s: float = 0.0


class StoreCollector:
    """Reads the store at each scrape. A store that cannot be read leaves these series
    out and says so in `stagetune_store_up`; the scrape itself still answers."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        store: Store | None = getattr(self.app.state, "store", None)
        up = GaugeMetricFamily("stagetune_store_up", "1 when the store answered this scrape")
        if store is None:  # still starting
            up.add_metric([], 0)
            return [up]
        try:
            now = snapshot(store, time.time())
        except Exception as exc:  # a database error: the readiness check says more
            log.warning("metrics: the store cannot be read: %s", str(exc).splitlines()[0]
                        if str(exc) else exc.__class__.__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *_families(now)]


def _families(now: Snapshot) -> Iterator[Metric]:
    studies = GaugeMetricFamily("stagetune_studies", "Studies in the store by status",
                                labels=("status",))
    for status, count in now.studies.items():
        studies.add_metric([status], count)
    yield studies
    yield GaugeMetricFamily("stagetune_trials_running",
                            "Trials asked for and not yet finished, over every running study",
                            value=now.running_trials)
    yield GaugeMetricFamily("stagetune_trials_per_second",
                            f"Trials finished (complete, pruned or failed) per second over the "
                            f"last {WINDOW_S:.0f} s, by running studies",
                            value=now.finished_recently / WINDOW_S)
    waits = now.queue_waits
    yield GaugeMetricFamily("stagetune_trial_queue_wait_seconds",
                            f"Mean wait from a trial being asked for to its worker starting, "
                            f"over the trials finished in the last {WINDOW_S:.0f} s",
                            value=sum(waits) / len(waits) if waits else 0.0)
    yield GaugeMetricFamily("stagetune_trial_queue_wait_max_seconds",
                            f"Longest such wait over the last {WINDOW_S:.0f} s",
                            value=max(waits, default=0.0))
    yield GaugeMetricFamily("stagetune_study_queue_wait_seconds",
                            "How long the longest-waiting pending study has waited for its "
                            "runner (0 when none waits)", value=now.oldest_pending_s)


def snapshot(store: Store, now: float) -> Snapshot:
    """Counts of studies by status; running trials, recent finishes and queue waits from the
    stages of the running studies that ran in the window."""
    out = Snapshot()
    for status in STATUSES:
        out.studies[status] = store.list_studies(status=status, limit=0)[1]
    pending, _ = store.list_studies(status="pending", limit=1000)
    out.oldest_pending_s = max((max(0.0, now - _utc(r.queued_at)) for r in pending
                                if r.queued_at is not None), default=0.0)
    for status in ACTIVE:
        records, _ = store.list_studies(status=status, limit=10_000)
        for record in records:
            for stage in record.stages:
                recent = stage.finished_at is not None and _utc(stage.finished_at) > now - WINDOW_S
                if stage.status == "running" or recent:
                    _count(out, store.trials(record.name, stage.name), now)
    return out


def _count(out: Snapshot, trials: list[FrozenTrial], now: float) -> None:
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            out.running_trials += 1
        elif trial.state in FINISHED and trial.datetime_complete is not None \
                and trial.datetime_complete.timestamp() > now - WINDOW_S:
            out.finished_recently += 1
            wait = _queue_wait(trial)
            if wait is not None:
                out.queue_waits.append(wait)


def _queue_wait(trial: FrozenTrial) -> float | None:
    """Seconds from the trial being asked for (Optuna's start) to its worker beginning."""
    worker: Any = trial.user_attrs.get("worker")
    began = worker.get("started_at") if isinstance(worker, dict) else None
    if not isinstance(began, int | float) or trial.datetime_start is None:
        return None
    return max(0.0, float(began) - trial.datetime_start.timestamp())  # Optuna's: local time


def _utc(moment: datetime) -> float:
    """Our tables' times are UTC; SQLite hands them back without a zone."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
