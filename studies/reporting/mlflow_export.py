"""A study's trials as MLflow runs (the optional `mlflow` extra: mlflow-skinny).

With STAGETUNE_MLFLOW_TRACKING_URI set, a study that ends is exported to the experiment
named after it: one run per finished trial, with the trial's parameters (the spec's fixed
ones too), its per-epoch metrics (step = epoch), tags for its study, stage, trial number
and state, and, on the winner's run, the winner's weights as the artifact
`weights/weights.pt`. The export is incremental: a resumed study adds the runs of its new
trials only. Runs are keyed by study, stage and trial number, plus the study's creation
time, so a study deleted and submitted again under its name gets runs of its own.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from stagetune.studies.store import StageRecord, Store, StudyRecord
from stagetune.studies.store.weights import fetch_weights

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

TAG = "stagetune"  # tags are stagetune.study, stagetune.stage, stagetune.trial, ...
STATES = {TrialState.COMPLETE: ("complete", "FINISHED"), TrialState.PRUNED: ("pruned", "FINISHED"),
          TrialState.FAIL: ("failed", "FAILED")}  # Optuna's state: our tag, MLflow's run status
METRICS_BATCH, PARAMS_BATCH = 1000, 100  # the most MLflow takes in one log_batch call
GIVE_UP_AFTER = 3  # runs in a row that fail: the tracking server is down, stop trying
INSTALL = "pip install 'stagetune[mlflow]'"


class MlflowUnavailable(Exception):
    """mlflow is not installed."""


def export_study(store: Store, study: str, tracking_uri: str) -> int:
    """Export the trials of `study` that have no run yet; returns how many runs it made.
    Raises MlflowUnavailable without mlflow, and MLflow's own errors for a tracking store
    that cannot be used (the caller logs them)."""
    client = _client(tracking_uri)
    record = store.study(study)
    created = record.created_at.isoformat() if record.created_at else ""
    experiment = _experiment(client, study)
    exported = _exported(client, experiment, created)
    made = failures = 0
    for stage in record.stages:
        trials = [t for t in store.trials(study, stage.name) if t.state in STATES
                  and (stage.name, t.number) not in exported]
        if not trials:
            continue
        curves = store.curves(study, stage.name, [t.number for t in trials])
        for trial in trials:
            try:
                exported[stage.name, trial.number] = _log_trial(
                    client, experiment, record, created, stage, trial, curves.get(trial.number, []))
            except Exception as exc:  # MLflow's errors are of many kinds
                failures += 1
                log.warning("mlflow: study %s: trial %s-%d not exported: %s", study, stage.name,
                            trial.number, _reason(exc))
                if failures >= GIVE_UP_AFTER:
                    raise
                continue
            made, failures = made + 1, 0
    try:
        _log_winner(client, record, exported)
    except Exception as exc:  # the runs stand without it
        log.warning("mlflow: study %s: the winner's weights not exported: %s", study, _reason(exc))
    return made


def _client(tracking_uri: str) -> MlflowClient:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise MlflowUnavailable(f"STAGETUNE_MLFLOW_TRACKING_URI is set, but mlflow is not "
                                f"installed: {INSTALL}") from None
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        # MLflow 3 refuses its file store unless told it is wanted; a file URI says it is
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment(client: MlflowClient, study: str) -> str:
    """The id of the experiment named after the study, created (or restored) if need be."""
    found = client.get_experiment_by_name(study)
    if found is None:
        return str(client.create_experiment(study, tags={f"{TAG}.study": study}))
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


def _exported(client: MlflowClient, experiment: str, created: str) -> dict[tuple[str, int], str]:
    """The runs this study already has: (stage, trial number) -> run id."""
    out: dict[tuple[str, int], str] = {}
    token = None
    query = f"tags.`{TAG}.created` = '{created}'"
    while True:
        page = client.search_runs([experiment], query, max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get(f"{TAG}.trial", "").isdigit():
                out[tags.get(f"{TAG}.stage", ""), int(tags[f"{TAG}.trial"])] = run.info.run_id
        token = page.token
        if not token:
            return out


def _log_trial(client: MlflowClient, experiment: str, record: StudyRecord, created: str,
               stage: StageRecord, trial: FrozenTrial, curve: list[dict[str, Any]]) -> str:
    from mlflow.entities import Param

    state, status = STATES[trial.state]
    tags = {f"{TAG}.study": record.name, f"{TAG}.created": created, f"{TAG}.stage": stage.name,
            f"{TAG}.trial": str(trial.number), f"{TAG}.state": state,
            f"{TAG}.status": str(trial.user_attrs.get("status", state))}
    if "seed" in trial.user_attrs:
        tags[f"{TAG}.seed"] = str(trial.user_attrs["seed"])
    run = client.create_run(experiment, start_time=_ms(trial.datetime_start), tags=tags,
                            run_name=f"{stage.name}-{trial.number}")
    run_id = run.info.run_id
    values = {**(record.spec.get("fixed") or {}), **trial.params}
    params = [Param(str(k), str(v)[:6000]) for k, v in values.items()]
    stamp = _ms(trial.datetime_complete) or _ms(trial.datetime_start) or 0
    metrics = list(_metrics(curve, stamp))
    for start in range(0, len(params), PARAMS_BATCH):
        client.log_batch(run_id, params=params[start:start + PARAMS_BATCH])
    for start in range(0, len(metrics), METRICS_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + METRICS_BATCH])
    client.set_terminated(run_id, status, end_time=_ms(trial.datetime_complete))
    return str(run_id)


def _metrics(curve: Sequence[dict[str, Any]], stamp: int) -> Iterator[Any]:
    """Every number of every epoch, at step = its epoch."""
    from mlflow.entities import Metric

    for epoch in curve:
        step = int(epoch.get("epoch", 0))
        for key, value in epoch.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                yield Metric(str(key), float(value), stamp, step)


def _log_winner(client: MlflowClient, record: StudyRecord, exported: dict[tuple[str, int], str]
                ) -> None:
    """The winner's weights (what confirm kept) as an artifact of its run, once."""
    weights: dict[str, Any] = {}
    stage_name = ""
    for stage in record.stages:
        if stage.hand_on.get("weights"):
            weights, stage_name = stage.hand_on["weights"], stage.name
    run_id = exported.get((stage_name, int(weights.get("trial", -1)))) if weights else None
    if run_id is None or not weights.get("artifact_id"):
        return
    if client.get_run(run_id).data.tags.get(f"{TAG}.winner") == "true":
        return  # a resume: logged already
    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_weights(str(weights["artifact_id"]), Path(tmp) / "weights.pt")
        client.log_artifact(run_id, str(path), "weights")
    client.set_tag(run_id, f"{TAG}.winner", "true")


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]
