"""An installed wheel, away from the checkout: `pip install` of the built wheel into a fresh
virtual environment, then `stagetune serve --demo` from a folder whose own `service`,
`studies` and `workers` packages would shadow ours if stagetune installed those names.

The fresh environment borrows the test environment's dependencies through a .pth line
(installing torch and Ray again would take minutes and the network); a .pth line adds a
folder to the path without running that folder's own .pth files, so the checkout's editable
install stays out of it and only the wheel provides `stagetune`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagetune.service.client import Client
from tests.service.server import Server
from tests.service.test_api import wait_for_status

pytestmark = pytest.mark.slow  # a wheel built and installed, the demo study run from it

REPO = Path(__file__).resolve().parents[2]
DEMO = "digits-convnet"  # examples/digits.yaml
ENDED = ("completed", "stopped", "failed", "cancelled")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel built from the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist"), str(source)], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("stagetune-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True)
    return env


@pytest.fixture(scope="module")
def shadowing_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project with packages named like the repo's folders; importing any of them
    fails loudly."""
    folder = tmp_path_factory.mktemp("user_project")
    for name in ("service", "studies", "workers"):
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('the user\\'s own {name} package was imported')\n")
    return folder


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_wheel_provides_stagetune_from_its_own_files(venv: Path, shadowing_folder: Path) -> None:
    where = run(venv, shadowing_folder, "python", "-c",
                "import stagetune.service.client, stagetune.workers, stagetune.studies.spec; "
                "print(stagetune.service.client.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    check = run(venv, shadowing_folder, "stagetune", "validate",
                str(REPO / "examples" / "digits.yaml"))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def demo(venv: Path, shadowing_folder: Path) -> Iterator[Server]:
    """`stagetune serve --demo` of the installed wheel, with its own local Ray."""
    data = shadowing_folder.parent / "demo-data"
    server = Server(f"sqlite:///{data / 'store.db'}", data, executable=str(venv / "bin" / "stagetune"),
                    args=("--demo",), cwd=shadowing_folder,
                    env={"PYTHONPATH": str(shadowing_folder)}).start(timeout=180)
    yield server
    server.stop()


def test_serve_demo_runs_the_demo_to_completion_from_the_wheel(demo: Server) -> None:
    with Client(demo.url) as api:
        study = wait_for_status(api, DEMO, ENDED, 600)
        assert study.status == "completed", (study, demo.log.read_text()[-3000:])
        assert study.best is not None and study.best.value and study.best.value > 0.9
        assert len(api.model(DEMO)) > 0  # the winner's weights, from the installed package


def test_the_wheel_exposes_the_public_surface(venv: Path, shadowing_folder: Path) -> None:
    """`import stagetune` from the wheel: its version from the package metadata, its names."""
    shown = run(venv, shadowing_folder, "python", "-c",
                "import stagetune; print(stagetune.__version__, stagetune.__all__)")
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)  # the check, in the deploy tier's log
    version = run(venv, shadowing_folder, "python", "-c",
                  "import importlib.metadata as m; print(m.version('stagetune'))").stdout.strip()
    assert shown.stdout.startswith(f"{version} ["), shown.stdout
    for name in ("Client", "StudySpec", "load_spec", "register_model", "SpecError", "__version__"):
        assert f"'{name}'" in shown.stdout, shown.stdout
