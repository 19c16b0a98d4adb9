"""The store's per-epoch records, on SQLite and PostgreSQL."""

from __future__ import annotations

from stagetune.studies.search.stages import ORDER
from stagetune.studies.store import Store
from tests.studies.ray_support import NO_PROBES, digits_spec


def test_an_epoch_run_again_replaces_its_record(store_url: str) -> None:
    """A trial continued from an older checkpoint (a restarted runner, a lost worker) runs
    some epochs twice: the curve holds each epoch once, as the run that went on saw it."""
    store = Store(store_url)
    spec = digits_spec("twice", resources={}, stages=NO_PROBES)
    store.open_study("twice", spec, list(ORDER))
    for epoch, loss in [(1, 0.9), (2, 0.7), (2, 0.6), (3, 0.5)]:
        store.record_epoch("twice", "coarse", 0, epoch, {"epoch": epoch, "train_loss": loss})
    store.record_epoch("twice", "coarse", 1, 2, {"epoch": 2, "train_loss": 0.8})  # another trial
    assert store.curves_of("twice", "coarse", 0) == [
        {"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.6},
        {"epoch": 3, "train_loss": 0.5}]
    assert store.curves_of("twice", "coarse", 1) == [{"epoch": 2, "train_loss": 0.8}]
