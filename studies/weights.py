"""Trained weights and trial checkpoints, kept with Optuna's artifact store in a folder
under the data folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from workers.data import get_data_settings


def artifact_store() -> FileSystemArtifactStore:
    """`$STAGETUNE_DATA_DIR/artifacts`, created on first use."""
    base = get_data_settings().data_dir / "artifacts"
    base.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(base))


def keep_weights(trial: optuna.Trial, state_dict: dict[str, Any]) -> str:
    """Save a running trial's state_dict as an artifact of it; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
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
    """A running trial's `save` callback: each checkpoint becomes an artifact of the trial
    (so any worker, or a later stage, can continue it), replacing the one before."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.latest: dict[str, Any] | None = None

    def __call__(self, epoch: int, checkpoint: bytes) -> None:
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
            store.remove(previous["artifact_id"])  # only the latest is ever continued


def load_checkpoint(artifact_id: str) -> bytes:
    """A stored checkpoint's bytes, for a request's `resume`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        download_artifact(artifact_store=artifact_store(), file_path=str(path),
                          artifact_id=artifact_id)
        return path.read_bytes()
