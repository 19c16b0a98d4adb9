"""mypy sees through `stagetune.*`: a wrong-type call across modules is an error, and the
public names resolve to their real types (not `Any`), as they do for a user's script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = '''
import stagetune
from stagetune.studies.planning.plan import make_plan

spec = stagetune.load_spec("examples/digits.yaml")
reveal_type(spec)
reveal_type(stagetune.Client)
count: int = spec  # wrong: a StudySpec is no int
make_plan(3.5)  # wrong: not a spec
'''


def test_mypy_resolves_stagetune_imports_and_catches_a_wrong_call(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--config-file",
                           str(REPO / "pyproject.toml"), str(script)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert 'Revealed type is "stagetune.studies.spec.model.StudySpec"' in out, out
    assert "stagetune.service.client.Client" in out, out
    assert 'variable has type "int"' in out, out
    assert 'Argument 1 to "make_plan" has incompatible type "float"' in out, out
    assert "import-not-found" not in out and "import-untyped" not in out, out
