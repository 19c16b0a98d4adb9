"""The command line with a plugin from outside the package: `validate`, `train`, `probe`
and `run` import STAGETUNE_PLUGINS before they look up a name or a knob."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # plugin studies and probes through the installed command

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))

PLUGIN = '''
"""A user's own model and dataset, each with a knob of its own."""
import math

import numpy as np
from pydantic import BaseModel, Field
from sklearn.datasets import load_digits
from torch import nn

from stagetune.workers.data import RawData, register_dataset
from stagetune.workers.models import register_model


class Heads(BaseModel):
    num_heads: int = Field(2, ge=1, le=8)


class Keep(BaseModel):
    keep_classes: int = Field(10, ge=2, le=10)


@register_model("cli_heads", knobs=Heads)
def cli_heads(data, cfg, knobs):
    """Linear heads, summed."""
    inputs = math.prod(data.input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, data.num_outputs * knobs.num_heads),
                         nn.Unflatten(1, (knobs.num_heads, data.num_outputs)), Sum())


class Sum(nn.Module):
    def forward(self, x):
        return x.sum(1)


@register_dataset("cli_digits", knobs=Keep)
def cli_digits(*, settings, keep_classes=10):
    """digits, the first classes only."""
    x, y = load_digits(return_X_y=True)
    keep = y < keep_classes
    return RawData(x[keep].astype(np.float32), y[keep], "classification")
'''

SPEC = {
    "name": "cli-plugin",
    "task": {"dataset": "cli_digits", "model": "cli_heads",
             "dataset_options": {"keep_classes": 5}},
    "space": {"num_heads": {"type": "categorical", "choices": [1, 3]},
              "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
    "stages": {"overfit": {"steps": 60}, "lr_probe": {"enabled": False},
               "coarse": {"trials": 2, "epochs": 1}, "refine": {"enabled": False},
               "confirm": {"top": 1, "seeds": 2, "epochs": 1}},
}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("my-plugins")
    (folder / "my_models.py").write_text(textwrap.dedent(PLUGIN))
    env = {**os.environ, "STAGETUNE_PLUGINS": "my_models", "STAGETUNE_PLUGINS_DIR": str(folder),
           "STAGETUNE_DATA_DIR": str(folder / "data")}
    env.pop("RAY_ADDRESS", None)  # a Ray of its own: its workers get the plugin settings
    return env


def stagetune(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAGETUNE, *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=env["STAGETUNE_DATA_DIR"].rsplit("/", 1)[0])


def test_validate_knows_the_plugin_and_its_knobs(plugin_env: dict[str, str], tmp_path: Path
                                                 ) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(SPEC))
    out = stagetune(plugin_env, "validate", str(good))
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "space": {"num_head": {"type": "int", "low": 1,
                                                                   "high": 2}}}))
    out = stagetune(plugin_env, "validate", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown parameter 'num_head'" in out.stderr and "num_heads" in out.stderr
    # without the plugin, the same spec names what is missing
    plain = {k: v for k, v in plugin_env.items() if k != "STAGETUNE_PLUGINS"}
    out = stagetune(plain, "validate", str(good))
    assert out.returncode == 2 and "unknown dataset 'cli_digits'" in out.stderr


def test_train_and_probe_build_the_plugin_model(plugin_env: dict[str, str]) -> None:
    out = stagetune(plugin_env, "train", "--dataset", "cli_digits", "--model", "cli_heads",
                    "--set", "num_heads=3", "--dataset-option", "keep_classes=4",
                    "--epochs", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed" and len(result["history"]) == 2
    assert result["final"]["val_accuracy"] > 0.5  # 4 classes
    out = stagetune(plugin_env, "probe", "init", "--dataset", "cli_digits", "--model",
                    "cli_heads", "--set", "num_heads=2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verdict"] in ("passed", "warned")
    out = stagetune(plugin_env, "train", "--dataset", "cli_digits", "--model", "cli_heads",
                    "--set", "num_heads=0")
    assert out.returncode == 2 and "num_heads" in out.stderr and "Traceback" not in out.stderr


def test_run_drives_a_plugin_study_to_the_end(plugin_env: dict[str, str], tmp_path: Path
                                              ) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = stagetune(plugin_env, "run", str(spec), "--db", f"sqlite:///{tmp_path / 's.db'}",
                    "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["status"] == "completed", report["message"]
    assert report["best"]["params"]["num_heads"] in (1, 3)
