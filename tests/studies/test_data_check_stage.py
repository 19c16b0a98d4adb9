"""The data check as the study's first gate: leaked validation samples stop the study
before any training, unless the spec allows them; a study stored before the stage existed
still resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets as skdatasets

from stagetune.studies.run.runner import Runner
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from stagetune.workers.data import DATASETS, DataSettings, RawData, register_dataset

if "digits_leaky" not in DATASETS:  # process-wide registry: once

    @register_dataset("digits_leaky")
    def digits_leaky(*, settings: DataSettings) -> RawData:
        """Digits with its first 400 images in twice: the split puts about a fifth of the
        copies on the other side of their originals."""
        bunch = skdatasets.load_digits()
        x, y = bunch.images[:, None], bunch.target
        return RawData(np.concatenate([x, x[:400]]), np.concatenate([y, y[:400]]),
                       "classification", is_image=True)


QUICK = {"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
         "coarse": {"trials": 1, "epochs": 1}, "refine": {"enabled": False},
         "confirm": {"enabled": False}}


def spec(name: str, dataset: str, **stages: Any) -> Any:
    return load_spec({"name": name, "task": {"dataset": dataset, "model": "mlp"},
                      "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
                      "stages": {**QUICK, **stages}})


def verdicts(report: Any) -> dict[str, str | None]:
    return {s["name"]: s["verdict"] for s in report.stages}


def test_leaked_validation_samples_stop_the_study_at_the_data_check(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    report = Runner(spec("leaky", "digits_leaky"), store).run()
    assert report.status == "stopped"
    seen = verdicts(report)
    assert list(seen) == list(ORDER) and seen["data_check"] == "failed"
    assert all(seen[s] is None for s in ORDER[1:])  # nothing trained, not even the baseline
    assert report.message.startswith("data_check: ")
    assert "validation samples are exact copies of training samples" in report.message
    assert report.compute["epochs"] == 0
    figures = store.study("leaky").stages[0].figures
    leaks = next(f for f in figures["findings"] if f["check"] == "leaks")
    assert leaks["exact"] > 0.05 * figures["val_rows"]


def test_allow_leaks_turns_the_failure_into_a_warning_and_goes_on(tmp_path: Path) -> None:
    report = Runner(spec("allowed", "digits_leaky", data_check={"allow_leaks": True}),
                    Store(f"sqlite:///{tmp_path / 'a.db'}")).run()
    assert report.status == "completed", report.message
    seen = verdicts(report)
    assert seen["data_check"] == "warned" and seen["baseline"] == "passed"
    assert seen["coarse"] in ("passed", "warned")
    message = report.stages[0]["message"]
    assert "exact copies" in message and "stages.data_check.allow_leaks" in message


def test_a_study_stored_before_the_data_check_existed_resumes(tmp_path: Path) -> None:
    """Its stored spec has no data_check section (nor the task fields added since) and its
    store no data_check row: read with today's defaults the specs say the same, so it
    resumes, and its stages run as stored."""
    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    old = spec("old", "digits")
    dumped = old.model_dump(mode="json")
    del dumped["stages"]["data_check"]
    for field in ("trainer", "loss", "metrics", "direction"):
        del dumped["task"][field]
    store.open_study("old", dumped, [s for s in ORDER if s != "data_check"])
    report = Runner(old, store).run()
    assert report.status == "completed", report.message
    assert [s["name"] for s in report.stages] == list(ORDER[1:])
    # a new study of the same spec checks its data first, and digits is clean
    fresh = Runner(spec("new", "digits"), store).run()
    assert verdicts(fresh)["data_check"] == "passed"


def test_noisy_labels_warn_and_their_fix_reaches_the_stage_as_data(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "plugins"))
    import planted  # noqa: F401  (registers planted_noisy_labels)

    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    report = Runner(spec("noisy", "planted_noisy_labels", coarse={"enabled": False}), store).run()
    (stage,) = [s for s in report.stages if s["name"] == "data_check"]
    assert stage["verdict"] == "warned" and "of the training labels look wrong" in stage["message"]
    (stored,) = [s for s in store.study("noisy").stages if s.name == "data_check"]
    assert {"set": {"label_smoothing": 0.1}, "why": (
        "a stopgap for noisy labels until they are cleaned")} in stored.figures["fixes"]
