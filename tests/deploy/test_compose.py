"""docker-compose.yml without a Docker engine: the Compose Specification's schema, every
command resolved against the project's own command line, the GPU reservation, and the
settings each service gets. (tests/e2e/test_compose_topology.py runs the same topology.)"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from jsonschema import Draft7Validator
from ray.scripts.scripts import cli as ray_cli

REPO = Path(__file__).resolve().parents[2]
# The Compose Specification's JSON Schema (github.com/compose-spec/compose-spec,
# schema/compose-spec.json, Apache-2.0), carried here so a fresh clone checks what CI does.
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))


def interpolate(value: str) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, with .env.example's values
    (or a placeholder where it leaves a required one empty); $$ is a literal $."""
    def one(match: re.Match[str]) -> str:
        name, op, default = match.group(1), match.group(2) or "", match.group(3) or ""
        given = ENV_EXAMPLE.get(name, "")
        if op == ":-":
            return given or default
        return given or f"<{name}>"
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value).replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in SERVICES[service].get("environment", {}).items()}


def stagetune_command(service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse a service's command the way the installed `stagetune` script would, in the
    service's environment (options may come from environment variables)."""
    command = SERVICES[service]["command"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts, f"{command[0]} is not in [project.scripts]: {scripts}"
    module_name, function = scripts[command[0]].split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function))  # the script runs this module's Typer app
    commands: dict[str, Any] = getattr(typer.main.get_command(module.app), "commands", {})
    assert command[1] in commands, f"'{command[1]}' is not a stagetune command: {sorted(commands)}"
    for name in ("RAY_ADDRESS", "STAGETUNE_PORT", "STAGETUNE_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    return commands[command[1]].make_context(command[1], list(command[2:]))


def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    assert [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(COMPOSE)] == []
    broken = copy.deepcopy(COMPOSE)  # the schema is strict enough to catch a slip
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capability"] = ["gpu"]
    assert not validator.is_valid(broken)
    assert set(SERVICES) == {"db", "api", "worker"}
    hosts = yaml.safe_load((REPO / "docker-compose.hosts.yml").read_text())  # an override
    assert [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(hosts)] == []
    assert set(hosts["services"]) <= set(SERVICES)


def test_the_override_for_other_machines_puts_the_ray_nodes_on_the_hosts_network(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = yaml.safe_load((REPO / "docker-compose.hosts.yml").read_text())["services"]
    assert hosts["api"]["network_mode"] == hosts["worker"]["network_mode"] == "host"
    head = stagetune_command("api", monkeypatch).params
    assert hosts["worker"]["environment"]["RAY_ADDRESS"] == f"127.0.0.1:{head['ray_port']}"
    database = hosts["api"]["environment"]["STAGETUNE_DATABASE_URL"]
    assert database.startswith("postgresql+psycopg://stagetune@127.0.0.1:5432/")
    assert hosts["db"]["ports"] == ["127.0.0.1:5432:5432"]  # not on other machines' reach


@pytest.mark.parametrize("service", ["api", "worker"])
def test_each_command_is_a_real_stagetune_command_with_real_options(
        service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = stagetune_command(service, monkeypatch)  # unknown options, bad values: UsageError
    if ctx.args:  # after `--`: they go to `ray start`
        ray_cli.commands["start"].make_context("start", list(ctx.args))
    assert SERVICES[service]["image"] == SERVICES["api"]["image"]  # one image for both


def test_the_workers_join_the_head_where_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    head = stagetune_command("api", monkeypatch).params
    worker = stagetune_command("worker", monkeypatch).params
    host, port = worker["address"].rsplit(":", 1)
    assert host == "api" and int(port) == head["ray_port"]
    assert head["host"] == "0.0.0.0"  # reachable through the published port
    published = [p.rsplit(":", 1)[-1] for p in SERVICES["api"]["ports"]]
    assert published == [str(head["port"])]
    assert f"127.0.0.1:{head['port']}/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert head["num_cpus"] == 0  # trials run on the workers only


def test_every_healthcheck_runs_a_real_command() -> None:
    db = SERVICES["db"]["healthcheck"]["test"]
    assert db[0] == "CMD-SHELL" and shlex.split(db[1])[0] == "pg_isready"
    assert f"-U {SERVICES['db']['environment']['POSTGRES_USER']}" in db[1]

    api = SERVICES["api"]["healthcheck"]["test"]
    assert api[:3] == ["CMD", "python", "-c"]
    compile(api[3], "healthcheck", "exec")

    kind, line = SERVICES["worker"]["healthcheck"]["test"]
    ray, subcommand, *args = shlex.split(interpolate(line))
    assert kind == "CMD-SHELL" and ray == "ray" and subcommand in ray_cli.commands
    ray_cli.commands[subcommand].make_context(subcommand, [a.replace("$RAY_ADDRESS", "api:6379")
                                                            for a in args])


def test_the_workers_reserve_the_nvidia_gpus_and_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # `docker compose up --scale worker=N` needs replicas that do not clash
    assert "container_name" not in worker and "ports" not in worker


def test_the_database_is_postgres_with_a_volume_a_healthcheck_and_a_password_from_env() -> None:
    db = SERVICES["db"]
    assert db["image"].startswith("postgres:")
    volume = db["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert SERVICES["api"]["depends_on"] == {"db": {"condition": "service_healthy"}}


def test_only_the_api_holds_database_credentials() -> None:
    api, worker = environment("api"), environment("worker")
    assert api["STAGETUNE_DATABASE_URL"].startswith("postgresql+psycopg://stagetune@db:5432/")
    assert api["PGPASSWORD"] == "<POSTGRES_PASSWORD>"  # required: no default
    assert not {k for k in worker if "DATABASE" in k or k.startswith("PG")}


def test_data_and_plugins_are_mounted_where_the_image_looks_for_them() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for service in ("api", "worker"):
        mounts = {m.split(":")[1]: m.split(":")[0] for m in SERVICES[service]["volumes"]}
        assert mounts["/data"] in COMPOSE["volumes"] and mounts["/plugins"] == "./plugins"
    assert "STAGETUNE_DATA_DIR=/data" in dockerfile and "STAGETUNE_PLUGINS_DIR=/plugins" in dockerfile
    assert (REPO / "plugins" / "example_plugin.py").is_file()


def test_env_example_covers_every_variable_and_leaves_the_secrets_to_the_user() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= set(ENV_EXAMPLE), f"not in .env.example: {sorted(used - set(ENV_EXAMPLE))}"
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {"POSTGRES_PASSWORD", "STAGETUNE_API_TOKENS", "RAY_AUTH_TOKEN"}
    assert all(ENV_EXAMPLE[name] == "" for name in required)  # no default secret to forget
    assert {"STAGETUNE_ALLOW_DOWNLOAD", "STAGETUNE_PLUGINS"} <= set(ENV_EXAMPLE)
