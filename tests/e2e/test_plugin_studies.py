"""The example plugin package (examples/plugin) end to end: installed with pip into a folder
of its own, found by its `stagetune.plugins` entry point, its five studies submitted over
REST to one live `stagetune serve` (with its own Ray, whose workers import the plugin),
run as full staged studies, and their dashboards opened in headless Chromium.

The package goes into a temporary folder put on the server's PYTHONPATH only: the test
process and the other tests never import it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from playwright.sync_api import Browser

from stagetune.service.client import Client
from stagetune.service.schemas import StudyDetail, TrialOut
from stagetune.studies.reporting.plots import PLOTS
from stagetune.workers.data import DATASETS, DataSettings, StreamData
from tests.service.server import Server
from tests.service.test_api import wait_for_status
from tests.service.test_dashboard import assert_every_figure_rendered, visit

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin"
ENDED = ("completed", "stopped", "failed", "cancelled")
PROBES = ("init_check", "overfit", "lr_probe")
# spec file -> the study it names
SPECS = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(
    (PLUGIN / "specs").glob("*.yaml"))}
NAMES = {stem: spec["name"] for stem, spec in SPECS.items()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed with pip into a folder of its own (from a copy, so that the
    build leaves nothing in the repository)."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", "--target", str(target), str(source)],
                   check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with its own local Ray; the plugin reaches it (and Ray's workers) only
    through PYTHONPATH and its entry point, not STAGETUNE_PLUGINS."""
    tmp = tmp_path_factory.mktemp("plugin-server")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data",
                    env={"PYTHONPATH": path, "STAGETUNE_PLUGINS": ""}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studies(server: Server) -> dict[str, StudyDetail]:
    """The five studies, submitted together as JSON and waited for: spec file -> study."""
    with Client(server.url) as api:
        for spec in SPECS.values():
            assert api.submit(spec).status == "pending"
        # five studies share one 2-CPU Ray: about 150 s on a quiet machine, and CI's two
        # test workers can double that; the others are waited for after the first
        return {stem: wait_for_status(api, name, ENDED, 900) for stem, name in NAMES.items()}


def trials(server: Server, stem: str) -> list[TrialOut]:
    with Client(server.url) as api:
        return api.trials(NAMES[stem], limit=500).items


def verdicts(study: StudyDetail) -> dict[str, str | None]:
    return {stage.name: stage.verdict for stage in study.stages}


def messages(study: StudyDetail) -> dict[str, str]:
    return {stage.name: stage.message for stage in study.stages}


def assert_completed(study: StudyDetail) -> None:
    assert study.status == "completed", (study.message, messages(study))
    found = verdicts(study)
    assert list(found) == ["data_check", "baseline", *PROBES, "coarse", "refine", "confirm"]
    for stage in ("coarse", "refine", "confirm"):  # every search stage ran
        assert found[stage] in ("passed", "warned"), (stage, messages(study)[stage])


# -- the package and its discovery ------------------------------------------------------

def test_the_package_installs_with_pip_and_declares_its_entry_point(site: Path) -> None:
    [dist] = site.glob("stagetune_example_plugin-*.dist-info")
    assert "[stagetune.plugins]\nexample = stagetune_example_plugin" in \
        (dist / "entry_points.txt").read_text()
    assert (site / "stagetune_example_plugin" / "scripts" / "digits_numpy.py").is_file()


@pytest.mark.slow
def test_the_registry_lists_the_plugins_entries_with_their_knobs(server: Server) -> None:
    registry = httpx.get(f"{server.url}/api/registry", timeout=30).json()
    knobs = {kind: {name: {k["name"]: k for k in entry["knobs"]}
                    for name, entry in registry[kind].items()}
             for kind in ("models", "datasets", "trainers")}
    heads = knobs["models"]["seq_attention"]["num_heads"]
    assert heads["type"] == "int" and heads["default"] == 2
    assert heads["bounds"] == {"ge": 1, "le": 8}
    assert registry["models"]["seq_attention"]["description"].startswith("Self-attention")
    tags = registry["datasets"]["digit_tags"]["declares"]
    assert tags["loss"] == "bce_with_logits" and tags["metrics"] == ["macro_f1"]
    assert set(knobs["datasets"]["fashion_png"]) == {"per_class", "image_size", "stream"}
    assert set(knobs["trainers"]["digits_loop"]) == {"mixup"}
    assert knobs["trainers"]["digits_numpy"]["hidden"]["bounds"] == {"ge": 4, "le": 256}
    numpy_trainer = registry["trainers"]["digits_numpy"]
    assert numpy_trainer["declares"]["kind"] == "command"
    assert numpy_trainer["description"].startswith("A NumPy MLP")
    assert "argv" not in numpy_trainer["declares"]  # the command line stays on the server
    assert "site-packages" not in json.dumps(registry) and sys.executable not in json.dumps(registry)
    assert "num_heads" not in registry["parameters"]  # declared, not built in


# -- bad input through the same server ----------------------------------------------------

@pytest.mark.slow
def test_an_undeclared_knob_is_a_422_that_lists_the_declared_ones(server: Server) -> None:
    spec = {**SPECS["attention"], "name": "bad-knob",
            "space": {"num_head": {"type": "categorical", "choices": [1, 2]}}}
    reply = httpx.post(f"{server.url}/api/studies", json=spec, timeout=30)
    assert reply.status_code == 422, reply.text
    [problem] = reply.json()["detail"]
    assert problem["loc"][:2] == ["body", "space"]
    assert "'num_head'" in problem["msg"] and "num_heads" in problem["msg"]
    assert "head_dim" in problem["msg"]  # every declared knob is listed, beside the built-in


@pytest.mark.slow
def test_a_declared_knob_out_of_its_bounds_is_a_422_naming_them(server: Server) -> None:
    spec = {**SPECS["command_trainer"], "name": "bad-bounds",
            "space": {"hidden": {"type": "int", "low": 2, "high": 64}}}
    reply = httpx.post(f"{server.url}/api/studies", json=spec, timeout=30)
    assert reply.status_code == 422, reply.text
    [problem] = reply.json()["detail"]
    assert problem["loc"] == ["body", "space", "hidden", "low"]
    assert "greater than or equal to 4" in problem["msg"], problem
    assert httpx.get(f"{server.url}/api/studies/bad-bounds", timeout=30).status_code == 404
    fixed = {**SPECS["attention"], "name": "bad-option",
             "task": {**SPECS["attention"]["task"], "model_options": {"num_heads": 16}}}
    reply = httpx.post(f"{server.url}/api/studies", json=fixed, timeout=30)
    assert reply.status_code == 422, reply.text
    assert "num_heads" in reply.text and "less than or equal to 8" in reply.text, reply.text


# -- the five studies -----------------------------------------------------------------------

@pytest.mark.slow
def test_the_attention_model_tunes_its_own_num_heads(
        server: Server, studies: dict[str, StudyDetail]) -> None:
    study = studies["attention"]
    assert_completed(study)
    assert verdicts(study)["init_check"] == "passed"
    searched = [t for t in trials(server, "attention") if t.stage in ("coarse", "refine")]
    assert len({t.params["num_heads"] for t in searched}) > 1  # the knob was tuned
    assert study.best.params["num_heads"] in (1, 2, 4)
    assert study.best.value > study.baseline > 0.1  # beats the linear model


@pytest.mark.slow
def test_the_multilabel_study_is_judged_by_macro_f1(
        server: Server, studies: dict[str, StudyDetail]) -> None:
    study = studies["multilabel"]
    assert_completed(study)
    said = messages(study)
    assert "val_macro_f1" in said["baseline"] and "val_macro_f1" in said["confirm"]
    last = trials(server, "multilabel")[-1]
    with Client(server.url) as api:
        curves = api.trial(NAMES["multilabel"], last.number).curves
    assert {"val_macro_f1", "val_loss", "train_loss"} <= set(curves[-1])
    assert last.value == pytest.approx(max(m["val_macro_f1"] for m in curves))  # the objective
    # answering yes to every tag scores a macro-F1 of about 0.6 on these tags
    assert study.best.value > max(0.8, study.baseline)
    # the init check expects BCE's per-label entropy (about 0.68 here), not ln 5
    assert verdicts(study)["init_check"] == "passed" and "bce_with_logits" in said["init_check"]


@pytest.mark.slow
def test_the_png_folder_is_written_once_and_streamed(
        server: Server, studies: dict[str, StudyDetail]) -> None:
    study = studies["png_stream"]
    assert_completed(study)
    folder = server.data_dir / "fashion_png" / "240_per_class"
    pngs = list(folder.glob("*/*.png"))
    assert len(pngs) == 2400 and len({p.parent.name for p in pngs}) == 10
    assert not list(folder.parent.glob(".writing-*"))  # no copy left half-written
    # the folder the plugin hands to image_folder is read item by item, kept uint8
    stream = DATASETS.get("image_folder")(settings=DataSettings(data_dir=server.data_dir),
                                          path="fashion_png/240_per_class", image_size=16)
    assert isinstance(stream, StreamData) and stream.train[0][0].dtype == torch.uint8
    # 10 classes (chance 0.1); on 1,920 small images a linear model is as good (about 0.78)
    assert study.best.value > 0.6


@pytest.mark.slow
def test_the_training_function_is_probed_tuned_and_continued(
        server: Server, studies: dict[str, StudyDetail]) -> None:
    study = studies["loop_trainer"]
    assert_completed(study)
    found = verdicts(study)
    assert all(found[p] in ("passed", "warned") for p in PROBES), messages(study)
    runs = trials(server, "loop_trainer")
    assert len({t.params["mixup"] for t in runs if t.stage == "coarse"}) > 1
    continued = [t for t in runs if t.stage == "refine" and t.continues is not None]
    assert continued and all(t.started_after == 1 for t in continued)  # from its checkpoint
    assert study.best.value > 0.9


@pytest.mark.slow
def test_the_command_trainer_runs_its_script_and_skips_the_probes(
        server: Server, studies: dict[str, StudyDetail]) -> None:
    study = studies["command_trainer"]
    assert_completed(study)
    said = messages(study)
    for probe in PROBES:
        assert verdicts(study)[probe] == "skipped" and "command" in said[probe], said[probe]
    assert verdicts(study)["baseline"] == "skipped"  # no dataset named: nothing to compare
    runs = trials(server, "command_trainer")
    assert len({t.params["hidden"] for t in runs}) > 1
    continued = [t for t in runs if t.stage == "refine" and t.continues is not None]
    assert continued and all(t.started_after == 1 for t in continued)  # its checkpoint dir
    assert all(t.state in ("complete", "pruned") for t in runs), runs
    assert study.best.value > 0.8


# -- the dashboards ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(SPECS))
def test_each_studys_dashboard_renders(server: Server, studies: dict[str, StudyDetail],
                                       browser: Browser, stem: str) -> None:
    assert studies[stem].status == "completed", studies[stem].message
    last = trials(server, stem)[-1].number
    study_figures = sum(not kind.per_trial and kind.only_if is None for kind in PLOTS.values())
    for path, figures in ((f"/studies/{NAMES[stem]}", study_figures),
                          (f"/studies/{NAMES[stem]}/trials/{last}", 1)):
        page, errors = visit(browser, server.url + path)
        assert assert_every_figure_rendered(page) == figures
        if "/trials/" not in path:
            assert page.inner_text("#status") == "completed"
            assert page.locator("#stages tbody tr").count() == 8  # data_check .. confirm
        assert errors == [], f"{path}: {errors}"
        page.close()
