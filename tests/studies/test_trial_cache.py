"""The store's trial cache outlives no study: one Store (as the service keeps one) reads
the right trials after a delete, when SQLite gives the next study the deleted one's
ids, and when a name is used again. (Against a real service: tests/service/
test_reads_after_delete.py.)"""

from __future__ import annotations

import optuna

from stagetune.studies.search.stages import ORDER
from stagetune.studies.store import Store, study_identity
from tests.studies.ray_support import NO_PROBES, digits_spec


def add_study(store: Store, name: str, values: list[float]) -> None:
    store.open_study(name, digits_spec(name, resources={}, stages=NO_PROBES), list(ORDER))
    study = store.optuna_study(name, "coarse", "maximize")
    for value in values:
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        study.tell(trial, value)


def values(store: Store, name: str) -> list[float | None]:
    return [t.value for t in store.trials(name, "coarse")]


def test_trials_after_a_delete_are_the_new_studys(store_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(store_url)
    add_study(store, "first", [1.0, 2.0, 3.0])
    assert values(store, "first") == [1.0, 2.0, 3.0]  # cached
    before = study_identity(store_url, "first")
    store.delete_study("first")
    assert values(store, "first") == [] and study_identity(store_url, "first") is None
    add_study(store, "second", [9.0])  # on SQLite: the first's Optuna study and trial ids
    assert values(store, "second") == [9.0]
    add_study(store, "first", [5.0, 6.0])  # the name again
    assert study_identity(store_url, "first") != before
    assert values(store, "first") == [5.0, 6.0]
    # deleted by another process (another Store): this one's cache is not told
    Store(store_url, create=False).delete_study("first")
    add_study(Store(store_url, create=False), "first", [7.0])
    assert values(store, "first") == [7.0]
