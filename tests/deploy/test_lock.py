"""constraints.txt, the one lock file: scripts/install.sh and the Dockerfile install with it,
so the image gets the versions this suite runs on (tests/deploy/test_stack.py compares the
image's packages with it)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement

from tests.deploy.stack import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    """The lock's pins, by canonical name."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version.strip()
    return pins


def test_every_dependency_is_locked_at_a_version_it_allows() -> None:
    lock = locked()
    wanted = [Requirement(r) for r in PYPROJECT["dependencies"]]
    wanted += [Requirement(r) for extra in PYPROJECT["optional-dependencies"].values()
               for r in extra if not r.startswith("stagetune")]
    unlocked = [str(r) for r in wanted if canonical(r.name) not in lock]
    refused = {str(r): lock[canonical(r.name)] for r in wanted
               if canonical(r.name) in lock and not r.specifier.contains(lock[canonical(r.name)],
                                                                          prereleases=True)}
    assert unlocked == [] and refused == {}, "run scripts/lock.sh after changing dependencies"


def test_this_environment_runs_the_locked_versions() -> None:
    differ = {}
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in locked() and locked()[name] != dist.version:
            differ[name] = (dist.version, locked()[name])
    assert differ == {}, "the suite must run what the image installs: scripts/install.sh"
