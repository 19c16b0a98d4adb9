"""A client-only install: `pip install <the checkout>` without extras brings no torch, Ray,
Optuna or SQLAlchemy, and its `stagetune` checks a spec's schema, submits the spec to a
running service (started from the test environment) and reads the study back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.service.server import Server
from tests.service.test_api import quick_study

pytestmark = pytest.mark.slow  # a fresh virtual environment, installed from the package index

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "ray", "optuna", "sqlalchemy", "fastapi", "sklearn")
# Measured: 63 MiB (the full .venv: about 7 GiB). Torch alone would be several hundred.
MOST_BYTES = 150 * 2**20


def _run(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `pip install <checkout>`, the locked versions."""
    tmp = tmp_path_factory.mktemp("light")
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "tests", "bench", "data",
        ".*_cache"))
    env = tmp / "venv"
    _run(sys.executable, "-m", "venv", env).check_returncode()
    pip = [env / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    constraints = ["-c", REPO / "constraints.txt"]
    # one small locked package first: an index that cannot be reached is a skip with the
    # reason, not a failure of the install under test
    probe = _run(*pip, "download", "-q", "--no-deps", *constraints, "-d", tmp / "probe", "pydantic",
                 timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"the package index is unreachable: {probe.stderr.strip()[-300:]}")
    installed = _run(*pip, "install", "-q", *constraints, source, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def test_a_plain_install_brings_no_torch_ray_optuna_or_sqlalchemy(light: Path) -> None:
    torch = _run(light / "bin" / "python", "-c", "import torch")
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    code = ("import importlib.util; "
            f"print(','.join(m for m in {HEAVY!r} if importlib.util.find_spec(m)))")
    found = _run(light / "bin" / "python", "-c", code)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == ""
    assert _size(light) < MOST_BYTES, f"the client-only install takes {_size(light) / 2**20:.0f} MiB"


def test_validate_checks_the_schema_and_says_what_it_left_to_the_service(light: Path) -> None:
    checked = _run(light / "bin" / "stagetune", "validate", REPO / "examples" / "digits.yaml")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok (its schema; registered names, knob values")
    assert "left to the service" in checked.stdout and len(checked.stdout.splitlines()) == 1
    # a schema error is still found here, with its field
    spec = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    spec["space"]["lr"]["low"] = "tiny"
    bad = light.parent / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    refused = _run(light / "bin" / "stagetune", "validate", bad)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "space.lr" in refused.stderr and "Traceback" not in refused.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    """A service from the test environment's own (full) install."""
    tmp = tmp_path_factory.mktemp("light_server")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", ray_address=ray_local).start(
        timeout=180)
    yield server
    server.stop()


def test_the_light_cli_submits_to_a_service_and_reads_the_study_back(light: Path, server: Server,
                                                                     tmp_path: Path) -> None:
    env = {**os.environ, "STAGETUNE_URL": server.url}

    def stagetune(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return _run(light / "bin" / "stagetune", *args, env=env, cwd=tmp_path, timeout=240)

    spec = tmp_path / "light.yaml"
    spec.write_text(yaml.safe_dump(quick_study("from-a-light-client")))
    assert stagetune("validate", spec).returncode == 0
    submitted = stagetune("submit", spec)
    assert submitted.returncode == 0, submitted.stderr
    assert "from-a-light-client" in submitted.stdout
    status = stagetune("status", "from-a-light-client", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == "from-a-light-client"
    trials = stagetune("trials", "from-a-light-client", "--json")
    assert trials.returncode == 0, trials.stderr
    assert "items" in json.loads(trials.stdout)
    # what a light validate leaves to the service, the service checks: at validate when
    # it has a URL (STAGETUNE_URL here), and at submit
    unknown = quick_study("unknown-model")
    unknown["task"] = {**unknown["task"], "model": "convnett"}
    spec.write_text(yaml.safe_dump(unknown))
    checked = stagetune("validate", spec)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "unknown model 'convnett'" in checked.stderr
    refused = stagetune("submit", spec)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "unknown model 'convnett'" in refused.stderr
    assert stagetune("cancel", "from-a-light-client").returncode == 0
