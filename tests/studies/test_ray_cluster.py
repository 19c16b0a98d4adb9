"""Two Ray nodes (ray.cluster_utils.Cluster): a node removed mid-study loses its trials,
Ray retries them on the node that is left, and the study completes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from stagetune.studies.run.cluster import NAMESPACE
from stagetune.studies.run.runner_actor import start_runner, stop_runner, wait_for
from tests.studies.ray_support import NO_PROBES, digits_spec, progress, submit, trials, wait_until

pytestmark = pytest.mark.slow  # a two-node Ray cluster per test, a node removed mid-study


@pytest.fixture
def two_nodes() -> Iterator[tuple[Cluster, Any]]:
    """A head with 1 CPU (where the runner lives) and a worker node with 1 CPU."""
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_a_node_removed_mid_study_has_its_trials_retried(
        two_nodes: tuple[Cluster, Any], store_url: str) -> None:
    cluster, worker = two_nodes
    spec = digits_spec("ray-node-loss", resources={"max_concurrent": 2, "max_retries": 2},
                       # refine without a pruner: every trial runs its 6 epochs (ASHA in
                       # coarse would end most at epoch 1, before the node could be removed)
                       stages={**NO_PROBES, "coarse": {"enabled": False},
                               "refine": {"trials": 4, "epochs": 6, "pruner": "none"},
                               "confirm": {"enabled": False}})
    store = submit(store_url, spec)
    actor = start_runner("ray-node-loss", store_url)
    on_worker = wait_until(
        lambda: [t for t in progress(actor)["trials"] if t.get("node") == worker.node_id
                 and store.curves("ray-node-loss", "refine").get(t["job"])],
        120, "a trial on the worker node has reported an epoch")[0]
    cluster.remove_node(worker)
    report = wait_for(actor)
    stop_runner(actor)

    assert report["status"] == "completed", report["message"]
    refine = {t.number: t for t in trials(store_url, "ray-node-loss", "refine")}
    assert len(refine) == 4 and all(t.state == TrialState.COMPLETE for t in refine.values())
    lost = refine[on_worker["job"]]
    assert lost.user_attrs["restarts"] >= 1
    assert lost.user_attrs["worker"]["node"] != worker.node_id  # finished on the head
