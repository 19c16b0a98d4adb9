"""What runs once a study's run has ended and its status is in the store: the export to
MLflow (STAGETUNE_MLFLOW_TRACKING_URI) and the webhook (STAGETUNE_WEBHOOK_URL), each only
when it is configured. Neither can fail the study: their errors are logged.

The study's runner calls `study_ended` and waits for it, so that `stagetune run` exits
only once they are done. They run in the cluster's `StudyEndHooks` actor, not in the
runner: a service's supervisor stops a runner as soon as its study has ended, and that
must not cut an export short. The settings are the runner's, passed along, so both read
the same environment (the head node's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stagetune.studies.run.cluster import NAMESPACE, head_node_id
from stagetune.studies.run.runner import report_of
from stagetune.studies.store import Store
from stagetune.workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

WAIT_SECONDS = 600.0  # the longest a runner waits for its hooks; they go on after that


@dataclass(frozen=True)
class Hooks:
    """The integration settings a runner hands to the hook actor."""

    mlflow_tracking_uri: str | None = None
    webhook_url: str | None = None
    webhook_token: str = ""
    webhook_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Hooks:
        return cls(settings.mlflow_tracking_uri, settings.webhook_url, settings.webhook_token,
                   settings.webhook_timeout_s)

    @property
    def any(self) -> bool:
        return bool(self.mlflow_tracking_uri or self.webhook_url)


def study_ended(store_url: str, study: str, result: dict[str, Any] | None) -> None:
    """Run the configured hooks for `study`, whose run just ended with `result` (the
    runner's report, or its failure); never raises."""
    hooks = Hooks.from_settings(get_settings())
    if not hooks.any:
        return
    objective = str((result or {}).get("objective") or "")
    try:
        ray.get(hook_actor().run.remote(store_url, study, objective, hooks), timeout=WAIT_SECONDS)
    except Exception:
        log.exception("study %s: its end-of-study hooks (MLflow export, webhook) failed", study)


def study_ended_elsewhere(store_url: str, study: str) -> None:
    """Ask the hook actor to run the configured hooks for `study`, which ended with no
    runner to run them (it was cancelled while pending); does not wait, never raises."""
    hooks = Hooks.from_settings(get_settings())
    if not hooks.any:
        return
    try:
        hook_actor().run.remote(store_url, study, "", hooks)
    except Exception:
        log.exception("study %s: its end-of-study hooks (MLflow export, webhook) failed", study)


def hook_actor() -> Any:
    """The cluster's hook actor, created if none is alive. A service creates it when it
    starts (service/app.py): a call to an actor still coming up waits in its caller, and
    would be lost with a runner stopped meanwhile; one sent to a live actor is not."""
    return StudyEndHooks.options(  # type: ignore[attr-defined]
        name="study-end-hooks", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
    ).remote()


def run_hooks(store_url: str, study: str, objective: str, hooks: Hooks) -> dict[str, Any]:
    """The hooks themselves, in this process: what each did, for the log and the tests."""
    log.info("study %s: its end-of-study hooks run", study)
    done: dict[str, Any] = {}
    store = Store(store_url, create=False)
    if hooks.mlflow_tracking_uri:
        from stagetune.studies.reporting.mlflow_export import export_study

        try:
            done["mlflow_runs"] = export_study(store, study, hooks.mlflow_tracking_uri)
            log.info("study %s: %d runs exported to MLflow", study, done["mlflow_runs"])
        except Exception as exc:
            first = str(exc).strip().splitlines()
            log.warning("study %s: the MLflow export failed: %s", study,
                        first[0][:300] if first else exc.__class__.__name__)
            done["mlflow_error"] = exc.__class__.__name__
    if hooks.webhook_url:
        from stagetune.studies.reporting.webhook import send, summary

        try:
            body = summary(report_of(store.study(study), objective).to_dict())
        except Exception:
            log.exception("study %s: no webhook: its summary cannot be read", study)
            return done
        done["webhook"] = send(hooks.webhook_url, body, hooks.webhook_token,
                               hooks.webhook_timeout_s)
    return done


@ray.remote(num_cpus=0, max_concurrency=16)  # type: ignore[call-overload]
class StudyEndHooks:
    """The cluster's one hook runner, on the head node beside the runners (it reads the
    store and the winners' weights, as they do)."""

    def __init__(self) -> None:
        if get_settings().mlflow_tracking_uri:  # seconds to import: before a study ends
            try:
                import mlflow  # noqa: F401
            except ImportError:
                pass  # the export says so, once a study ends

    def run(self, store_url: str, study: str, objective: str, hooks: Hooks) -> dict[str, Any]:
        return run_hooks(store_url, study, objective, hooks)
