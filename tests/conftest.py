"""Shared fixtures, and test-only models registered the way a user's plugin would be."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.models import MODELS, register_model


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine
    OpenMP's spinning threads slow tests some 50x whenever another process runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks decide the order
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that hold slow tests first, each whole and in its order. With
    `--dist loadfile` (pyproject) a test worker takes the next module as it runs out, so
    the long modules start early and the short ones fill in at the end; xdist's default
    order, by the number of tests, left modules of one or two long tests for last."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # a stable sort keeps each module's order


# Process-wide registries outlive a test module; register once.
if "frozen_convnet" not in MODELS:

    def _scaled_convnet(scale: float) -> None:
        @register_model(f"logits_x{scale:g}_convnet")
        def factory(data: Dataset, cfg: ModelConfig) -> nn.Module:
            """The default convnet with its logits multiplied: a classic init bug."""
            return _Scaled(MODELS.get("convnet")(data, cfg), scale)

    _scaled_convnet(20)
    _scaled_convnet(50)

    @register_model("frozen_convnet")
    def frozen_convnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
        """A convnet whose every weight is frozen: it cannot learn."""
        model = MODELS.get("convnet")(data, cfg)
        model.requires_grad_(False)
        return model


class _Scaled(nn.Module):
    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


# -- stores: SQLite files and fresh PostgreSQL databases -------------------------------

POSTGRES_URL = os.environ.get("STAGETUNE_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    yield from _fresh_postgres()


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database shared by a module's tests (one server for all)."""
    yield from _fresh_postgres()


def _fresh_postgres() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("STAGETUNE_TEST_POSTGRES_URL is set empty: no PostgreSQL configured")
    name = f"stagetune_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on a SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


# -- Ray: one real local cluster per test process, clean for each module -----------------

@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Stops the test process's Ray, if one is up, when the session ends."""
    yield
    import ray

    ray.shutdown()


_RAY_STARTED_WITH: dict[str, str] = {}  # the environment the process's Ray started in


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="module")
def ray_local(_ray_session: None) -> Iterator[str]:
    """A local 2-CPU Ray for the module's tests; yields its address for subprocesses.
    The first module that asks starts it and later ones reuse it (a start and a stop cost
    some 4 s a module), as a new one: the detached actors (runners, the trial pool) that
    servers started are killed at the end of their module. A module that started runners
    itself stops the Ray, as does one whose environment differs (a webhook's URL set for the
    runners: Ray's workers inherit the environment Ray started in). A module that needs a
    Ray of its own calls `ray.shutdown()` before its `ray.init`."""
    import ray

    from stagetune.studies.run.cluster import NAMESPACE

    if ray.is_initialized() and (_environment() != _RAY_STARTED_WITH or not _all_cpus_free()):
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False)
        _RAY_STARTED_WITH.clear()
        _RAY_STARTED_WITH.update(_environment())
    yield ray.get_runtime_context().gcs_address
    if not ray.is_initialized():
        return
    job = ray.get_runtime_context().get_job_id()
    if any(a["JobID"] == job for a in ray._private.state.actors().values()):
        # this process started runners: their trial workers, warm and of this process's
        # job, would serve the next module's runners too; it gets a new Ray
        ray.shutdown()
    else:  # only servers' runners ran here: they and their workers go with them
        _kill_detached_actors()


def _all_cpus_free(timeout: float = 10) -> bool:
    """Whether the reused Ray has its CPUs back: a task an earlier module's runner left
    holding one (its owner killed, the task not yet) would starve this module's trials."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0):
            return True
        time.sleep(0.2)
    return False


def _kill_detached_actors(timeout: float = 30) -> None:
    """Kill every named actor, and wait until their processes are gone: a later module's
    runners and trial pool start afresh, with that module's environment."""
    import psutil
    import ray
    from ray.util import list_named_actors

    for entry in list_named_actors(all_namespaces=True):
        try:
            ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]))
        except ValueError:  # it ended on its own meanwhile
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [a["Pid"] for a in ray._private.state.actors().values()  # the GCS's table
                 if a["Name"] and a["State"] != "DEAD" and a["Pid"] and psutil.pid_exists(a["Pid"])]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"named actors still alive {timeout:.0f} s after ray.kill: {alive}")


CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/install.sh installs it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module that asks for it."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
