"""A runner is one small process per study: it imports no torch, loads no data, and its
trials share a 2-CPU Ray without oversubscribing it, on warm worker processes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psutil
import pytest
import ray

from stagetune.studies.run.runner_actor import start_runner, stop_runner, wait_for
from tests.studies.ray_support import NO_PROBES, digits_spec, max_overlap, submit, trials

HEAVY = ("torch", "torchvision", "sklearn", "pandas", "plotly")


def test_the_runner_actor_module_imports_no_torch() -> None:
    code = ("import sys, stagetune.studies.run.runner_actor; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert heavy == "", f"importing studies.run.runner_actor imports {heavy}"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_runner_that_ran_a_study_holds_no_torch(store_url: str) -> None:
    # no objective: the dataset's kind is found by a trial worker; confirm hands weights back
    spec = digits_spec("footprint", resources={"max_concurrent": 4},
                       stages={**NO_PROBES, "init_check": {"enabled": False},
                               "coarse": {"trials": 4, "epochs": 1},
                               "refine": {"trials": 2, "epochs": 2, "warm_start": 1},
                               "confirm": {"top": 1, "seeds": 1}})
    submit(store_url, spec)
    actor = start_runner("footprint", store_url)
    report = wait_for(actor)
    pid = ray.get(actor.__ray_call__.remote(lambda _: __import__("os").getpid()))
    loaded = ray.get(actor.__ray_call__.remote(
        lambda _: [m for m in HEAVY if m in __import__("sys").modules]))
    # USS: what this runner's process holds alone (shared libraries count once per machine)
    uss_mb = psutil.Process(pid).memory_full_info().uss / 2**20
    stop_runner(actor)

    assert report["status"] == "completed", report["message"]
    assert report["weights"] is not None  # the winner's weights came back without torch
    assert loaded == [], f"the runner imported {loaded}"
    assert uss_mb < 250, f"the runner holds {uss_mb:.0f} MB of its own"

    workers: list[dict[str, Any]] = [t.user_attrs["worker"] for stage in ("coarse", "refine")
                                     for t in trials(store_url, "footprint", stage)
                                     if "worker" in t.user_attrs]
    # max_concurrent 4 on 2 CPUs: two at once, and reports do not hand a CPU to a third
    assert max_overlap([(w["started_at"], w["finished_at"]) for w in workers]) <= 2
    assert len({w["pid"] for w in workers}) <= 2  # the same two warm workers throughout


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_concurrent_studies_share_warm_workers(store_url: str) -> None:
    # each runner is a detached actor; trials go through the cluster's trial pool, so two
    # studies at once run on the same two worker processes
    names = ("share-a", "share-b")
    for name in names:
        submit(store_url, digits_spec(name, resources={"max_concurrent": 2}, stages={
            **NO_PROBES, "init_check": {"enabled": False}, "coarse": {"trials": 6, "epochs": 1},
            "refine": {"enabled": False}, "confirm": {"enabled": False}}))
    actors = [start_runner(name, store_url) for name in names]
    reports = [wait_for(actor) for actor in actors]
    for actor in actors:
        stop_runner(actor)

    assert [r["status"] for r in reports] == ["completed", "completed"], reports
    pids = {name: {t.user_attrs["worker"]["pid"] for t in trials(store_url, name, "coarse")}
            for name in names}
    assert len(pids["share-a"] | pids["share-b"]) <= 2, pids
    assert pids["share-a"] & pids["share-b"], pids  # a worker ran trials of both studies
