"""A command trainer's program, run by a real `stagetune serve` on the Ray it starts (whose
workers inherit the service's environment), gets the environment it is allowed and none
of the service's secrets."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import pytest

from stagetune.service.client import Client
from stagetune.workers.trainers._command import INHERITED
from tests.service.server import Server
from tests.service.test_api import wait_for_status
from tests.studies.ray_support import NO_PROBES

pytestmark = pytest.mark.slow  # a server with a Ray of its own runs a command study

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "env-token-0123"
SECRETS = {"STAGETUNE_WEBHOOK_TOKEN": "webhook-secret",
           "STAGETUNE_DATABASE_URL": "postgresql+psycopg://stagetune:db-secret@db/stagetune",
           "PGPASSWORD": "db-secret", "STAGETUNE_SESSION_SECRET": "session-secret",
           "AWS_SECRET_ACCESS_KEY": "cloud-secret"}
# what the program is documented to get: the trial's values, its registration's `env` and
# `pass_env` (tests/workers/trainer_plugin.py), and INHERITED
TRIAL_VARIABLES = ["STAGETUNE_PARAMS", "STAGETUNE_PARAM_*", "STAGETUNE_EPOCHS",
                   "STAGETUNE_START_EPOCH", "STAGETUNE_HORIZON", "STAGETUNE_SEED",
                   "STAGETUNE_DEVICE", "STAGETUNE_MODE", "STAGETUNE_CHECKPOINT_DIR",
                   "STAGETUNE_RESUME", "PYTHONUNBUFFERED"]
REGISTERED = ["SCRIPT_MODE", "ENV_DUMP", "PASSED_*"]


def test_a_command_gets_its_trial_and_registration_but_no_secret(tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    env = {**SECRETS, "STAGETUNE_PLUGINS": "tests.workers.trainer_plugin",
           "STAGETUNE_PLUGINS_DIR": str(ROOT), "ENV_DUMP": str(dump),
           "PASSED_BY_NAME": "yes", "LC_TIME": "C.UTF-8"}
    server = Server(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data", tokens=TOKEN,
                    env=env, cwd=ROOT).start()
    try:
        with Client(server.url, token=TOKEN) as api:
            api.submit({"name": "env-study", "task": {"trainer": "script_env"},
                        "space": {"hidden": {"type": "int", "low": 8, "high": 16}},
                        "stages": {**NO_PROBES, "coarse": {"trials": 1, "epochs": 1},
                                   "refine": {"enabled": False},
                                   "confirm": {"enabled": False}}})
            study = wait_for_status(api, "env-study", ("completed", "stopped", "failed"), 300)
            assert study.status == "completed", (study.message, study.stages)
    finally:
        server.stop()
    got = json.loads(dump.read_text())
    assert not {name for name, value in got.items() if name in SECRETS or TOKEN in value
                or any(secret in value for secret in SECRETS.values())}
    allowed = [*INHERITED, *TRIAL_VARIABLES, *REGISTERED]
    assert [n for n in got if not any(fnmatch.fnmatchcase(n, p) for p in allowed)] == []
    assert got["PATH"] == os.environ["PATH"] and got["LC_TIME"] == "C.UTF-8"
    assert got["SCRIPT_MODE"] == "env" and got["PASSED_BY_NAME"] == "yes"
    assert 8 <= int(got["STAGETUNE_PARAM_HIDDEN"]) <= 16 and got["STAGETUNE_EPOCHS"] == "1"
