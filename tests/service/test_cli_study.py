"""`stagetune validate` and `stagetune run`, through the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stagetune.studies.spec import load_spec
from stagetune.workers.data import get_data_settings

pytestmark = pytest.mark.slow  # `stagetune run` studies, each with a Ray of its own

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))
EXAMPLES = Path(__file__).parents[2] / "examples"
QUICK = {
    "name": "cli-quick",
    "task": {"dataset": "digits", "model": "convnet"},
    "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
    "stages": {"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
               "coarse": {"trials": 2, "epochs": 1}, "refine": {"enabled": False},
               "confirm": {"top": 1, "seeds": 2, "epochs": 1}},
}


def stagetune(*args: str, ray: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed command; `ray` joins that cluster instead of starting a local one."""
    env = {**os.environ, "RAY_ADDRESS": ray} if ray else None
    return subprocess.run([STAGETUNE, *args], capture_output=True, text=True, timeout=600, env=env)


def test_every_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the transfer example starts from weights it tells you to make first, in the data folder
    monkeypatch.setenv("STAGETUNE_DATA_DIR", str(tmp_path))
    (tmp_path / "digits-0-4-convnet.pt").write_bytes(b"made by stagetune train")
    get_data_settings.cache_clear()
    try:
        for example in sorted(EXAMPLES.glob("*.yaml")):
            load_spec(example)  # raises with every problem listed
    finally:
        get_data_settings.cache_clear()
    out = stagetune("validate", str(EXAMPLES / "digits.yaml"))
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr


def test_validate_lists_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: {dataset: digts, model: convnet}\n"
                   "space: {lr: {type: float, low: 1, high: 0.1}}\n")
    out = stagetune("validate", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "task.dataset: unknown dataset 'digts'" in out.stderr
    assert "space.lr: low must be below high" in out.stderr


def test_run_json_completes_and_resumes_as_a_no_op(tmp_path: Path, ray_local: str) -> None:
    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump(QUICK))
    db = f"sqlite:///{tmp_path / 'store.db'}"
    out = stagetune("run", str(spec), "--db", db, "--json", ray=ray_local)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["study"] == "cli-quick" and result["status"] == "completed"
    assert [s["name"] for s in result["stages"]][:2] == ["data_check", "baseline"]
    assert all({"name", "verdict", "message"} <= set(s) for s in result["stages"])
    assert set(result["best"]) == {"params", "value"} and "lr" in result["best"]["params"]
    assert result["baseline"] > 0.5
    assert result["compute"]["epochs"] > 0 and result["compute"]["seconds"] > 0
    again = json.loads(stagetune("run", str(spec), "--db", db, "--json").stdout)
    assert again["best"] == result["best"]


def test_run_exits_1_with_the_reason_when_the_study_fails(tmp_path: Path, ray_local: str) -> None:
    spec = tmp_path / "frozen.yaml"
    spec.write_text(yaml.safe_dump({**QUICK, "name": "cli-frozen", "task": {
        "dataset": "cifar10", "model": "convnet"}}))
    out = stagetune("run", str(spec), "--db", f"sqlite:///{tmp_path / 's.db'}", ray=ray_local)
    # the spec is valid, but its dataset's files are not in the data folder (which only
    # loading finds out): an input error in the first stage, and the study fails
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "STAGETUNE_ALLOW_DOWNLOAD" in out.stderr


def test_run_json_carries_each_stages_fixes_as_the_api_does(tmp_path: Path, ray_local: str) -> None:
    # twelve sigmoid layers without normalisation: init_check stops the study with its
    # fixes as data (`GET /api/studies/{id}`'s "fixes"), and run --json gives the same
    spec = tmp_path / "sigmoid.yaml"
    spec.write_text(yaml.safe_dump({**QUICK, "name": "cli-sigmoid", "task": {
        "dataset": "digits", "model": "mlp"},
        "fixed": {"activation": "sigmoid", "depth": 12, "norm": "none"}}))
    out = stagetune("run", str(spec), "--db", f"sqlite:///{tmp_path / 's.db'}", "--json",
                    ray=ray_local)
    result = json.loads(out.stdout)
    assert result["status"] == "stopped", out.stderr
    stages = {s["name"]: s for s in result["stages"]}
    assert all(isinstance(s["fixes"], list) for s in result["stages"])
    edits = [f["set"] for f in stages["init_check"]["fixes"]]
    assert {"norm": "batch"} in edits and {"init": "xavier"} in edits
    assert all(f["why"] for f in stages["init_check"]["fixes"])
