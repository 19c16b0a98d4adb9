"""`stagetune run` when Ray lets it down: a local Ray that will not start, a runner that
dies mid-study. It always prints its JSON report, ends in one line with the reason (exit
1), and leaves its study failed in the store, never pending or running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from stagetune.studies.store import Store
from tests.service.server import STAGETUNE
from tests.service.test_api import long_study
from tests.studies.ray_support import wait_until

pytestmark = pytest.mark.slow  # `stagetune run` with a Ray that fails to start or a runner killed


def run(spec: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return subprocess.Popen([STAGETUNE, "run", str(path), "--db", f"sqlite:///{tmp_path / 's.db'}",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)


def ended(child: subprocess.Popen[str], tmp_path: Path, name: str) -> tuple[dict[str, Any], str]:
    out, err = child.communicate(timeout=300)
    assert child.returncode == 1, err
    assert "Traceback" not in out + err, err
    assert out.startswith("{"), out[:2000]
    report = json.loads(out)
    assert report["study"] == name and report["status"] == "failed"
    record = Store(f"sqlite:///{tmp_path / 's.db'}").study(name)
    assert record.status == "failed" and record.message == report["message"]
    assert err.rstrip().splitlines()[-1] == f"error: {report['message']}"
    return report, err


def test_a_local_ray_that_does_not_start_fails_the_study_in_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("Ray cannot make its session folder under a file")
    env = {"RAY_ADDRESS": "", "RAY_TMPDIR": str(not_a_folder), "STAGETUNE_RAY_START_SECONDS": "2"}
    started = time.monotonic()
    report, err = ended(run(long_study("no-ray"), tmp_path, env), tmp_path, "no-ray")
    assert time.monotonic() - started < 120
    assert report["message"].startswith("a local Ray did not start (")
    assert "allow it longer with STAGETUNE_RAY_START_SECONDS" in report["message"]
    assert report["message"].endswith("resume it to go on")
    assert err.count("trying again") >= 1  # it was tried again within the 2 s allowed


def test_a_runner_that_dies_fails_the_study_and_the_report_is_printed(tmp_path: Path,
                                                                      ray_local: str) -> None:
    child = run(long_study("runner-dies"), tmp_path, {"RAY_ADDRESS": ray_local})
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    wait_until(lambda: store.study_names() and store.study("runner-dies").status == "running",
               120, "the study runs")
    runner = wait_until(lambda: [a for a in ray._private.state.actors().values()
                                 if a["Name"].startswith("runner:runner-dies@") and a["Pid"]
                                 and a["State"] == "ALIVE"], 60, "its runner is up")[0]
    os.kill(runner["Pid"], signal.SIGKILL)  # as the kernel's or Ray's memory killer would
    report, _ = ended(child, tmp_path, "runner-dies")
    assert report["message"].startswith("the study's runner stopped (")
    assert report["message"].endswith("; resume it to go on")
