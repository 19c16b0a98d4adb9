"""The API's own process imports no torch: a real `stagetune serve` checks submitted specs and
lists the registry through its worker-code child (workers/sidecar.py), and stays small."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from stagetune.service.client import ApiError, Client
from tests.service.server import Server
from tests.service.test_api import quick_study

pytestmark = pytest.mark.slow  # a server's worker-code child checked from outside

# Measured: about 240 MiB resident after start-up, a submit, two refusals and the registry
# (SQLite store, joined to a local Ray; 1.25 GiB when the API imported torch). The bound
# leaves room for allocator noise, not for torch (some 400 MiB more).
RSS_BOUND = 320 * 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("api_process")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", ray_address=ray_local).start(
        timeout=180)
    yield server
    server.stop()


def test_the_api_checks_with_the_workers_code_without_importing_torch(server: Server) -> None:
    assert server.process is not None
    api_process = psutil.Process(server.process.pid)
    with Client(server.url, timeout=180) as api:
        assert api.submit(quick_study("no-torch-here")).id == "no-torch-here"
        # refusals that only the workers' registries can give: a model's name, a knob's value
        unknown = quick_study("unknown-model")
        unknown["task"] = {**unknown["task"], "model": "convnett"}
        with pytest.raises(ApiError, match="unknown model 'convnett'; registered: convnet") as refused:
            api.submit(unknown)
        assert refused.value.status == 422
        bad_knob = quick_study("bad-knob")
        bad_knob["space"] = {**bad_knob["space"], "optimizer": {"type": "categorical",
                                                                "choices": ["sgd", "adamw", "sdg"]}}
        with pytest.raises(ApiError, match=r"space\.optimizer\.choices\.2") as refused:
            api.submit(bad_knob)
        assert refused.value.status == 422
        listed = httpx.get(f"{server.url}/api/registry", timeout=180).json()
        assert {"convnet", "mlp", "torchvision"} <= set(listed["models"])
        assert "digits" in listed["datasets"]
        api.cancel("no-torch-here")  # its runner need not train for this test

    maps = Path(f"/proc/{api_process.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps, "the API's process loaded torch"
    rss = api_process.memory_info().rss
    assert rss < RSS_BOUND, f"the API's process holds {rss / 2**20:.0f} MiB"
    # the checks ran in the child, which did load torch
    children = api_process.children()
    assert any("libtorch" in Path(f"/proc/{c.pid}/maps").read_text() for c in children
               if c.is_running()), [c.cmdline() for c in children]
