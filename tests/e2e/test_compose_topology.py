"""docker compose's topology without containers: PostgreSQL, `stagetune head` (a Ray head
with the API joined to it, as the `api` service runs), a `stagetune worker` node offering
a custom resource in place of GPUs (as the `worker` service), the plugins folder, a study
submitted over HTTP, and its trials run on the worker node."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stagetune.service.client import Client
from tests.service.server import STAGETUNE, free_port
from tests.studies.ray_support import wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
API_TOKEN = "e2e-token"

# A driver of its own (the test process keeps out of this cluster): the live nodes, once
# the worker has joined with its resource.
NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if any("gpu_stand_in" in n["Resources"] for n in nodes):
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in nodes]))
"""


@dataclass
class Topology:
    url: str
    ray_address: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([STAGETUNE, *args], env=env, start_new_session=True,
                                   stdout=(self.logs / f"{name}.log").open("wb"),
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def topology(postgres_url: str, tmp_path: Path) -> Iterator[Topology]:
    # Ray's own folder, short: its socket paths must stay under ~107 characters
    ray_temp = tempfile.mkdtemp(prefix="st-", dir="/tmp")
    ray_port, api_port = free_port(), free_port()
    env = {**os.environ, "STAGETUNE_DATA_DIR": str(tmp_path / "data"), "STAGETUNE_API_TOKENS": API_TOKEN,
           "STAGETUNE_PLUGINS": "example_plugin", "STAGETUNE_PLUGINS_DIR": str(REPO / "plugins"),
           # as in .env: every node and the service hold the cluster's token
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    topo = Topology(f"http://127.0.0.1:{api_port}", f"127.0.0.1:{ray_port}", env, tmp_path)
    try:
        head = topo.start("head", ["head", "--host", "127.0.0.1", "--port", str(api_port),
                                   "--db", postgres_url, "--ray-port", str(ray_port),
                                   "--num-cpus", "1", "--", f"--temp-dir={ray_temp}"], env)
        wait_until(lambda: _ready(topo.url) or head.poll() is not None, 150, "the head serves")
        assert head.poll() is None, topo.log("head")
        # as the worker service: the head's address from RAY_ADDRESS
        topo.start("worker", ["worker", "--num-cpus", "2", "--resources", '{"gpu_stand_in": 4}',
                              "--", f"--temp-dir={ray_temp}"], {**env, "RAY_ADDRESS": topo.ray_address})
        yield topo
    finally:
        leftovers = _stop(topo.processes)
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert not leftovers, f"still running 20 s after SIGTERM: {leftovers}"


@pytest.mark.slow
def test_a_study_submitted_over_http_runs_its_trials_on_the_worker_node(topology: Topology) -> None:
    nodes = _nodes(topology)
    (head,) = [n["id"] for n in nodes if "node:__internal_head__" in n["resources"]]
    workers = [n["id"] for n in nodes if "gpu_stand_in" in n["resources"]]
    assert len(workers) == 1 and workers[0] != head, (nodes, topology.log("worker"))

    spec = {"name": "compose-topology",
            "task": {"dataset": "digits", "model": "linear_softmax"},  # the plugin's model
            "space": {"lr": {"type": "float", "low": 3e-3, "high": 3e-1, "log": True}},
            "stages": {"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                       "coarse": {"trials": 3, "epochs": 1},
                       "refine": {"trials": 2, "epochs": 1, "warm_start": 1},
                       "confirm": {"enabled": False}},
            # the head offers a CPU too: only the custom resource keeps trials off it
            "resources": {"max_concurrent": 2, "custom": {"gpu_stand_in": 1}}}
    with Client(topology.url, API_TOKEN) as api:
        api.submit(spec)
        study = wait_until(lambda: (s := api.study("compose-topology")).status
                           in ("completed", "stopped", "failed") and s, 150, "the study ends")
        assert study.status == "completed", (study.message, topology.log("head"))
        trials = api.trials("compose-topology", limit=500).items
    assert len(trials) == 5
    assert {(t.worker or {}).get("node") for t in trials} == {workers[0]}

    _check_compose_healthchecks(topology)


def test_a_worker_that_cannot_reach_its_head_says_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([STAGETUNE, "worker", "--address", f"127.0.0.1:{free_port()}",
                           "--wait", "1"], env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert re.match(r"error: cannot reach the Ray head at 127\.0\.0\.1:\d+ \(Connection refused\) "
                    r"after 1 s", lines[0])


# -- helpers -----------------------------------------------------------------------------

def _check_compose_healthchecks(topology: Topology) -> None:
    """docker-compose.yml's healthchecks of `api` and `worker`, run against the live nodes."""
    api_check = COMPOSE["api"]["healthcheck"]["test"]
    # the same command, pointed at this test's port instead of the container's 8000
    code = api_check[3].replace("127.0.0.1:8000", topology.url.removeprefix("http://"))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)

    kind, line = COMPOSE["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    env = {**topology.env, "RAY_ADDRESS": topology.ray_address,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", line.replace("$$", "$")], env=env, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _nodes(topology: Topology) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-c", NODES, topology.ray_address], env=topology.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _stop(processes: list[subprocess.Popen[bytes]]) -> list[str]:
    """SIGTERM each process, the worker before the head (as compose stops them), and wait;
    then SIGKILL whatever is left in their process groups, and name it."""
    leftovers = []
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                leftovers.append(shlex.join(map(str, process.args)))  # type: ignore[arg-type]
        process.wait()
        if not _group_gone(process.pid, timeout=20):  # the node's processes exit after it
            leftovers.append(f"process group {process.pid}: {_members(process.pid)}")
            os.killpg(process.pid, signal.SIGKILL)  # its group: only what it started
    return leftovers


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _members(pgid):
            return True
        time.sleep(0.2)
    return False


def _members(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, as 'pid name'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(f"{stat.parent.name} {name}")
    return found
