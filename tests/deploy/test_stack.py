"""The deploy tier: the repo's Dockerfile built and its docker-compose.yml started by a real
Docker engine, as a user runs them (with docker-compose.cpu.yml, and an override that keeps
every service on 127.0.0.1), then what operators do to it. The tests run in order, on one
stack; each step's time and what it lost go to the log (`stack.say`).

Run it with `python -m pytest -m deploy -n 0 -s` (scripts/test.sh does, after the suite);
without a Docker engine it is skipped with the reason."""

from __future__ import annotations

import io
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.stack import COMPOSE, IMAGE, PLUGIN, REPO, Stack, engine_missing, run, say, timed, wait_for
from tests.deploy.test_lock import canonical, locked

CACHE = "stagetune:build-stage"
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(2400)]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
ENDED = ("completed", "stopped", "failed", "cancelled")


def spec(name: str, model: str = "mlp", **overrides: Any) -> dict[str, Any]:
    """A short study on Fashion-MNIST (Debian's package, in the image): epochs of a few
    seconds on one CPU, so that an operator can interrupt its trials mid-way."""
    return {"name": name,
            "task": {"dataset": "fashion_mnist", "dataset_options": {"subset": 20000},
                     "model": model},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                      "batch_size": {"type": "categorical", "choices": [32, 64]}},
            "fixed": {"width": 128} if model == "mlp" else {},
            "stages": {"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                       "coarse": {"enabled": False}, "confirm": {"enabled": False},
                       "refine": {"trials": 4, "epochs": 5, "warm_start": 0}},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 2}, **overrides}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    missing = engine_missing()
    if missing:
        pytest.skip(missing)
    say(f"engine: Docker {run(['docker', 'info', '--format', '{{.ServerVersion}}']).stdout.strip()}, "
        f"Compose {run([COMPOSE, 'version', '--short']).stdout.strip()}")
    timed("stand-in base images (scripts/docker/base-images.sh)",
          lambda: run(["bash", str(REPO / "scripts/docker/base-images.sh")], timeout=1200))
    timed(f"docker build -t {IMAGE} . (the repo's Dockerfile)", build)
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout)
    say(f"image {IMAGE}: {size / 1e9:.2f} GB")
    folder = Path(tempfile.mkdtemp(prefix="stagetune-deploy-"))
    stack = Stack(f"stagetune-deploy-{folder.name[-6:].lower()}", folder)
    try:
        stack.up()
        yield stack
    finally:
        run(["docker", "rm", "-f", f"{stack.project}-worker2"], check=False)
        timed("docker compose down -v", lambda: stack.compose("down", "-v", "--timeout", "30",
                                                              check=False))


def build() -> None:
    """The repo's Dockerfile, its build stage tagged too, so that the layers a later build
    reuses are kept and the superseded ones (untagged) can be pruned."""
    for target in (["--target", "build", "-t", CACHE], ["-t", IMAGE]):
        run(["docker", "build", "--network", "host", *target, str(REPO)], timeout=1800)
    run(["docker", "image", "prune", "-f"])


def submit(stack: Stack, body: dict[str, Any]) -> str:
    with stack.client() as api:
        response = api.post("/api/studies", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def study(stack: Stack, study_id: str) -> dict[str, Any]:
    with stack.client() as api:
        response = api.get(f"/api/studies/{study_id}")
    response.raise_for_status()
    return dict(response.json())


def trials(stack: Stack, study_id: str, **query: Any) -> list[dict[str, Any]]:
    with stack.client() as api:
        response = api.get(f"/api/studies/{study_id}/trials", params={"limit": 500, **query})
    response.raise_for_status()
    return list(response.json()["items"])


def running_with_epochs(stack: Stack, study_id: str, epochs: int) -> list[int]:
    """Trials running with at least `epochs` epochs recorded."""
    numbers = []
    with stack.client() as api:
        for trial in trials(stack, study_id, state="running"):
            curve = api.get(f"/api/studies/{study_id}/trials/{trial['number']}").json()["curves"]
            if len(curve) >= epochs:
                numbers.append(trial["number"])
    return numbers


def finish(stack: Stack, study_id: str, timeout: float = 420) -> dict[str, Any]:
    start = time.monotonic()
    ended = wait_for(lambda: (s := study(stack, study_id))["status"] in ENDED and s, timeout,
                     f"study {study_id} ends", every=3)
    say(f"study {study_id}: {ended['status']} in {time.monotonic() - start:.0f} s more, best "
        f"{(ended.get('best') or {}).get('value')}")
    assert ended["status"] == "completed", (ended.get("message"), stack.logs("api"))
    return ended


def lost(stack: Stack, study_id: str) -> list[dict[str, Any]]:
    """Trials that ended failed: what an operator's action would have cost."""
    return [t for t in trials(stack, study_id) if t["state"] == "fail"]


def test_the_image_runs_as_a_user_who_can_write_the_data_folder(stack: Stack) -> None:
    who = run(["docker", "run", "--rm", "--network", "host", "-v", f"{stack.project}_data:/data",
               IMAGE, "sh", "-c", "id -u; touch /data/probe && rm /data/probe && echo writable"])
    uid, writable = who.stdout.split()
    say(f"image user: uid {uid}; /data {writable}")
    assert uid != "0" and writable == "writable"


def test_the_image_holds_this_version_and_the_locked_packages(stack: Stack) -> None:
    version = run(["docker", "run", "--rm", "--network", "host", IMAGE, "stagetune", "--version"])
    assert version.stdout.strip() == f"stagetune {VERSION}"
    frozen = run(["docker", "run", "--rm", "--network", "host", IMAGE, "pip", "freeze",
                  "--exclude-editable"]).stdout.splitlines()
    installed = dict(line.split("==", 1) for line in frozen if "==" in line)
    installed.pop("stagetune", None)
    lock = locked()
    differ = {name: (version, lock.get(canonical(name))) for name, version in installed.items()
              if lock.get(canonical(name)) != version}
    say(f"image: {version.stdout.strip()}, {len(installed)} packages, all at the lock's versions "
        f"(torch {installed.get('torch')})" if not differ else f"image differs from the lock: {differ}")
    assert differ == {}


def test_a_study_with_the_mounted_plugin_completes_with_its_trials_on_the_worker(stack: Stack) -> None:
    # a worker is healthy once the head answers it; its node registers a moment later
    nodes = wait_for(lambda: len(n := stack.nodes()) == 2 and n, 120, "the worker's node joins")
    (head,) = [n["id"] for n in nodes if "node:__internal_head__" in n["resources"]]
    workers = [n["id"] for n in nodes if n["id"] != head]
    assert len(workers) == 1 and nodes, nodes
    start = time.monotonic()
    first = spec("deploy-first", model="linear_softmax")  # the mounted plugin's model
    first["stages"] |= {"refine": {"trials": 2, "epochs": 2}, "confirm": {"top": 1, "seeds": 2}}
    study_id = submit(stack, first)
    ended = finish(stack, study_id)
    done = trials(stack, study_id)
    say(f"first study: {len(done)} trials in {time.monotonic() - start:.0f} s on PostgreSQL, "
        f"nodes {sorted({t['worker']['node'][:8] for t in done if t['worker']})} "
        f"(worker {workers[0][:8]}, head {head[:8]})")
    assert ended["spec"]["task"]["model"] == "linear_softmax"
    assert done and {t["worker"]["node"] for t in done if t["worker"]} == {workers[0]}

    with stack.client() as api:
        model = api.get(f"/api/studies/{study_id}/model")
        assert model.status_code == 200, model.text
        names = zipfile.ZipFile(io.BytesIO(model.content)).namelist()
    # the dashboard, as a browser reaches it: no bearer token, a login, then the study's page
    with httpx.Client(base_url=stack.url, timeout=30) as browser:
        assert browser.post("/login", json={"token": stack.token}).status_code == 204
        page = browser.get(f"/studies/{study_id}")
        plotly = browser.get("/vendor/plotly.min.js")
    say(f"model download: {len(model.content)} bytes ({', '.join(names)}); dashboard page "
        f"{page.status_code}, {len(page.text)} characters")
    assert page.status_code == 200 and "deploy-first" in page.text and plotly.status_code == 200


def test_a_second_worker_started_with_docker_run_joins_and_takes_trials(stack: Stack) -> None:
    name = f"{stack.project}-worker2"
    ports = stack.ports["WORKER2"]
    # as docs/guides/cluster.md ("Beyond one machine") says, on this machine
    run(["docker", "run", "-d", "--name", name, "--init", "--network", "host", "--shm-size", "2g",
         "-v", f"{stack.project}_data:/data", "-v", f"{REPO / 'plugins'}:/plugins:ro",
         "-e", f"RAY_ADDRESS=127.0.0.1:{stack.ports['RAY']}", "-e", "RAY_AUTH_MODE=token",
         "-e", f"RAY_AUTH_TOKEN={stack.ray_token}", "-e", f"STAGETUNE_PLUGINS={PLUGIN}",
         # it claims a GPU it does not have: the next test's GPU trial lands here
         IMAGE, "stagetune", "worker", "--resources", '{"second_worker": 2}', "--num-gpus", "1", "--",
         f"--min-worker-port={ports}",
         f"--max-worker-port={ports + 299}"])
    joined = wait_for(lambda: [n for n in stack.nodes() if "second_worker" in n["resources"]], 180,
                      "the second worker joins")
    say(f"second worker joined as node {joined[0]['id'][:8]}")
    study_id = submit(stack, spec("deploy-second-worker",
                                  resources={"max_concurrent": 2, "custom": {"second_worker": 1}}))
    finish(stack, study_id)
    nodes = {t["worker"]["node"] for t in trials(stack, study_id) if t["worker"]}
    assert nodes == {joined[0]["id"]}


def test_a_gpu_trial_on_a_worker_whose_gpu_torch_cannot_use_fails_with_the_reason(stack: Stack) -> None:
    """The second worker offers Ray a GPU, but its container has no NVIDIA runtime."""
    study_id = submit(stack, spec("deploy-no-usable-gpu", resources={"gpus_per_trial": 1}))
    ended = wait_for(lambda: (s := study(stack, study_id))["status"] in ENDED and s, 300,
                     "the GPU study ends", every=3)
    say(f"GPU trial on a worker without a usable GPU: study {ended['status']}: {ended['message']}")
    assert ended["status"] == "failed"
    assert "torch cannot use CUDA" in ended["message"] and "rather than run on the CPU" in ended["message"]
    run(["docker", "rm", "-f", f"{stack.project}-worker2"])


def test_stopping_the_worker_mid_trial_then_starting_it_retries_the_trial(stack: Stack) -> None:
    # Long trials, none pruned: one seen at its first epoch still has most of its epochs to
    # run when the stop lands (compose takes a moment), so Ray's drain cannot let it finish.
    stages = {**spec("")["stages"], "refine": {"trials": 4, "epochs": 15, "warm_start": 0,
                                                "pruner": "none"}}
    study_id = submit(stack, spec("deploy-worker-stop", stages=stages))
    interrupted = wait_for(lambda: running_with_epochs(stack, study_id, 1), 300,
                           "a trial runs its second epoch", every=1)
    # Ray drains a node that is asked to stop, so a trial with a few seconds to go would end
    # within compose's grace period: 3 s here (epochs take longer) stops the worker mid-trial
    timed("docker compose stop --timeout 3 worker (mid-trial)",
          lambda: stack.compose("stop", "--timeout", "3", "worker"))
    time.sleep(5)
    timed("docker compose start worker", lambda: stack.compose("start", "worker"))
    finish(stack, study_id)
    after = {t["number"]: t for t in trials(stack, study_id)}
    say(f"worker stop: trials {interrupted} interrupted; restarts "
        f"{[after[n]['restarts'] for n in interrupted]}, continued after epochs "
        f"{[after[n]['started_after'] for n in interrupted]}, interrupted "
        f"{[after[n]['interrupted'] for n in interrupted]}; failed trials: "
        f"{len(lost(stack, study_id))}")
    assert lost(stack, study_id) == []
    # every interrupted trial ends; one still in its epochs when the node died is retried
    assert all(after[n]["state"] in ("complete", "pruned") for n in interrupted), after
    if not any(after[n]["restarts"] >= 1 for n in interrupted):
        say(f"no interrupted trial restarted: {after}\napi:\n{stack.logs('api')}\n"
            f"worker:\n{stack.logs('worker')}")
    assert any(after[n]["restarts"] >= 1 for n in interrupted), after


def test_restarting_the_api_mid_study_continues_its_trials_from_their_checkpoints(stack: Stack) -> None:
    # 15-epoch trials: a 5-epoch one at its third epoch could finish, reported to its old
    # runner, before the new service's supervisor stops that runner (seen once: no trial
    # was left to continue)
    stages = {**spec("")["stages"], "refine": {"trials": 4, "epochs": 15, "warm_start": 0,
                                                "pruner": "none"}}
    study_id = submit(stack, spec("deploy-api-restart", stages=stages))
    interrupted = wait_for(lambda: running_with_epochs(stack, study_id, 2), 300,
                           "a trial runs its third epoch", every=1)
    timed("docker compose restart api (mid-study)", lambda: stack.compose("restart", "api"))
    wait_for(stack.ready, 300, "the api answers /readyz again")
    finish(stack, study_id)
    after = {t["number"]: t for t in trials(stack, study_id)}
    say(f"api restart: trials {interrupted} interrupted; continued after epochs "
        f"{[after[n]['started_after'] for n in interrupted]}; failed trials: "
        f"{len(lost(stack, study_id))}; worker {stack.health('worker')}")
    assert lost(stack, study_id) == []
    assert all(after[n]["state"] in ("complete", "pruned") for n in interrupted)
    assert any((after[n]["started_after"] or 0) >= 1 for n in interrupted), after


def test_down_then_up_keeps_every_study(stack: Stack) -> None:
    with stack.client() as api:
        before = {s["id"]: (s["status"], s["best_value"]) for s in api.get("/api/studies").json()["items"]}
    timed("docker compose down (volumes kept)", lambda: stack.compose("down", "--timeout", "30"))
    stack.up()
    with stack.client() as api:
        after = {s["id"]: (s["status"], s["best_value"]) for s in api.get("/api/studies").json()["items"]}
    say(f"down/up: {len(before)} studies before, {len(after)} after, each with its status and best "
        f"value: {before == after}")
    assert after == before and len(before) >= 3
