"""Trained weights and trial checkpoints, kept with Optuna's artifact store in a folder
under the data folder."""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from stagetune.studies.store import is_database_error
from stagetune.workers.data import get_data_settings

log = logging.getLogger(__name__)
SAVED = "__saved__"  # a state_dict that a trial worker already wrote as a file's bytes


def artifact_store() -> FileSystemArtifactStore:
    """`$STAGETUNE_DATA_DIR/artifacts`, created on first use."""
    base = get_data_settings().data_dir / "artifacts"
    base.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(base))


def as_saved(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A state_dict as the bytes of its file, for a trial worker to hand back: tensors
    would import torch in the runner that receives them."""
    import torch  # a trial worker's: it has the tensors

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return {SAVED: buffer.getvalue()}


def keep_weights(trial: optuna.Trial, state_dict: dict[str, Any]) -> str:
    """Save a running trial's state_dict (or its file, `as_saved`) as an artifact of it;
    returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        if set(state_dict) == {SAVED}:
            path.write_bytes(state_dict[SAVED])
        else:
            import torch  # in-process trials only (LocalExecutor): a runner gets `as_saved`

            torch.save(state_dict, path)
        artifact_id = upload_artifact(artifact_store=artifact_store(), file_path=str(path),
                                      study_or_trial=trial, mimetype="application/octet-stream")
    trial.set_user_attr("weights", artifact_id)
    return artifact_id


def fetch_weights(artifact_id: str, path: Path) -> Path:
    """Copy an artifact's weights to `path` (torch.load reads them)."""
    download_artifact(artifact_store=artifact_store(), file_path=str(path), artifact_id=artifact_id)
    return path


class TrialCheckpoints:
    """A running trial's `save` callback: a checkpoint it hands over becomes an artifact of
    the trial, replacing the one before (`latest`: an interrupted trial's, from its earlier
    runs), so that any worker, a later stage, or the next runner after a restart can go on.

    The trial waits while one is written, so not every one is: those after the epochs in
    `keep` (coarse's rungs, which refine continues) and the first always are; the others
    only once the time since the last write is `1 / SHARE` times what that write took, so
    that writing costs the trial at most about SHARE of its time. A small model's epochs of
    a fraction of a second are then written every few epochs, a large one's every epoch;
    a runner restarted meanwhile re-runs the epochs since the last one written.

    One the database cannot take (it is away) costs the trial nothing: it is kept, and
    written with the next one, or by `flush` when the trial is told."""

    SHARE = 0.05

    def __init__(self, trial: optuna.Trial, keep: Collection[int] = (),
                 latest: dict[str, Any] | None = None) -> None:
        self.trial, self.keep = trial, frozenset(keep)
        self.latest = latest
        self.pending: tuple[int, bytes] | None = None  # handed over, not written yet
        self._written = False
        self._written_at = self._cost = 0.0

    def __call__(self, epoch: int, checkpoint: bytes) -> None:
        started = time.monotonic()
        if self._written and epoch not in self.keep and self.pending is None \
                and (started - self._written_at) * self.SHARE < self._cost:
            return
        try:
            self._write(epoch, checkpoint, started)
        except Exception as exc:
            if not is_database_error(exc):
                raise
            log.warning("trial %d: the checkpoint after epoch %d is not written yet (%s)",
                        self.trial.number, epoch, exc)
            self.pending = (epoch, checkpoint)

    def flush(self) -> None:
        """Write the checkpoint the database could not take, if no later one was (a
        database error is raised: the caller waits, `studies.store.wait_out`)."""
        if self.pending is not None:
            self._write(*self.pending, time.monotonic())

    def _write(self, epoch: int, checkpoint: bytes, started: float) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"checkpoint-{epoch}.pt"
            path.write_bytes(checkpoint)
            store = artifact_store()
            artifact_id = upload_artifact(artifact_store=store, file_path=str(path),
                                          study_or_trial=self.trial,
                                          mimetype="application/octet-stream")
        previous, self.latest = self.latest, {"artifact_id": artifact_id, "epoch": epoch}
        self.trial.set_user_attr("checkpoint", self.latest)
        if previous is not None:
            _remove(store, previous["artifact_id"])  # only the latest is ever continued
        self._written, self._written_at = True, time.monotonic()
        self._cost, self.pending = self._written_at - started, None

    def discard(self) -> None:
        """Free the file of a told trial's latest checkpoint, which no stage continues
        (confirm's); the trial's record of it stays, as its history. (Before the tell, a
        runner that died in between would leave a finished run to be run again.)"""
        if self.latest is not None:
            _remove(artifact_store(), self.latest["artifact_id"])
            self.latest = None


def _remove(store: FileSystemArtifactStore, artifact_id: str) -> None:
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:  # gone already (a cleaned data folder): nothing to free
        pass


def load_checkpoint(artifact_id: str) -> bytes:
    """A stored checkpoint's bytes, for a request's `resume`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        download_artifact(artifact_store=artifact_store(), file_path=str(path),
                          artifact_id=artifact_id)
        return path.read_bytes()
