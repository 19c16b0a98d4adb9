"""Schemathesis, the way CI runs it: `st run` against the live server's OpenAPI with a
bounded number of examples and every check, configured as scripts/fuzz_api.py is (which
runs many more, against studies it runs first). No generated request may get a 500, every
response must conform to the documented schema, and a schema-valid request is refused only
for a rule the schema cannot state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.server import Server

pytestmark = pytest.mark.slow  # schemathesis fuzzes every operation of a server

SCHEMATHESIS = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).parents[2] / "scripts" / "fuzz_api.toml"


def test_no_500s_and_responses_match_the_schema(open_server: Server) -> None:
    out = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{open_server.url}/openapi.json",
         "--checks", "all",
         "--max-examples", "15", "--generation-deterministic", "--workers", "1",
         "--no-color"],
        capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "operations" in out.stdout.lower()
