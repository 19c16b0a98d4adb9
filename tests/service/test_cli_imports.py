"""A machine that only talks to a service needs no torch: the client, and the command
line up to the commands that train, import none (nor Ray, Optuna or SQLAlchemy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "optuna", "sqlalchemy")


@pytest.mark.parametrize("module", ["stagetune.service.client", "stagetune.service.cli._app"])
def test_importing_loads_no_torch(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
