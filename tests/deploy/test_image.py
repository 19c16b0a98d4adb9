"""The Dockerfile, without a Docker engine: its base, its user, and an install that is the
one CI runs (scripts/install.sh); the non-editable install it does is built here as a wheel
and must hold every file of the packages."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# instructions, with continuation lines joined and comments dropped
INSTRUCTIONS = [(line.split(None, 1) + [""])[:2] for line in
                re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
# the repo's folders, each installed as stagetune.<folder> through stagetune/'s symlinks
PACKAGES = sorted(p.name for p in (REPO / "stagetune").iterdir() if p.is_symlink())


def instructions(kind: str) -> list[str]:
    return [args for name, args in INSTRUCTIONS if name.upper() == kind]


def test_the_image_is_python_3_11_slim_and_runs_as_a_user_that_is_not_root() -> None:
    # the build stages and the runtime stage, all on the machines' Debian
    assert {f.split()[0] for f in instructions("FROM")} == {"python:3.11-slim-bookworm"}
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert f"useradd --create-home --uid 1000 {users[-1]}" in " ".join(instructions("RUN"))


def test_the_image_installs_what_ci_installs_at_the_locked_versions() -> None:
    pips = [p for r in instructions("RUN") for p in re.findall(r"pip (?:install|wheel) ([^&]*)", r)]
    # the dependencies under the lock; the project's wheel, built under it and installed alone
    assert [p.split()[:3] for p in pips] == [["-c", "constraints.txt", "-r"],
                                             ["--no-deps", "-c", "constraints.txt"],
                                             ["--no-deps", "/wheels/*.whl"]]
    install_sh = (REPO / "scripts" / "install.sh").read_text()
    assert re.search(r"pip install -q -c constraints\.txt -e '\.\[dev\]'", install_sh)
    system = re.search(r"system_packages=\(([^)]*)\)", install_sh)
    assert system is not None
    apt = next(shlex.split(r) for r in instructions("RUN") if "apt-get" in r and "install" in r)
    tail = apt[apt.index("install") + 1:]
    packages = {a for a in tail[:tail.index("&&") if "&&" in tail else None] if not a.startswith("-")}
    # what CI installs; chromium only serves the dashboard's browser tests
    assert packages == set(system.group(1).split()) - {"chromium"} == {"dataset-fashion-mnist"}
    copied = {source for args in instructions("COPY") for source in args.split()[:-1]}
    assert set(PACKAGES) | {"stagetune", "pyproject.toml", "constraints.txt",
                            PYPROJECT["project"]["readme"]} <= copied


def test_the_image_exposes_the_api_and_the_ray_head_and_starts_the_head() -> None:
    assert set(" ".join(instructions("EXPOSE")).split()) == {"8000", "6379"}
    assert json.loads(instructions("CMD")[0])[:2] == ["stagetune", "head"]


def test_a_non_editable_install_holds_every_file_of_the_packages(tmp_path: Path) -> None:
    """`pip install .` in the image is not the editable install CI runs: templates, static
    files or migrations left out of the wheel would only show in the container."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"]):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    shutil.copytree(REPO / "stagetune", source / "stagetune", symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    in_tree = {f"stagetune/{p.relative_to(source)}" for package in PACKAGES
               for p in (source / package).rglob("*") if p.is_file()}
    assert sorted(in_tree - in_wheel) == []
    assert {"stagetune/__init__.py", "stagetune/py.typed"} <= in_wheel
    assert "stagetune/service/cli/_cluster.py" in in_wheel
    assert "stagetune/examples/digits.yaml" in in_wheel  # what `serve --demo` submits
    # nothing installs a top-level name a user's own package could shadow
    tops = {name.split("/")[0] for name in in_wheel}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"stagetune"}
