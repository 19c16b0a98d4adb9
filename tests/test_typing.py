"""mypy sees through `stagetune.*`: a wrong-type call across modules is an error, and the
public names resolve to their real types (not `Any`), as they do for a user's script: the
client's replies are the API's response models."""

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
with stagetune.Client("http://127.0.0.1:8000") as api:
    reveal_type(api.study("digits"))
    reveal_type(api.trials("digits").items[0])
    reveal_type(api.studies())
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
    # the client's replies are the API's response models, not dicts
    assert 'Revealed type is "stagetune.service.schemas.StudyDetail"' in out, out
    assert 'Revealed type is "stagetune.service.schemas.TrialOut"' in out, out
    assert ('Revealed type is "stagetune.service.schemas.Page[stagetune.service.schemas.'
            'StudySummary]"') in out, out
    assert 'variable has type "int"' in out, out
    assert 'Argument 1 to "make_plan" has incompatible type "float"' in out, out
    assert "import-not-found" not in out and "import-untyped" not in out, out
