"""Trained weights and trial checkpoints, kept with Optuna's artifact store in a folder
under the data folder."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from stagetune.workers.data import get_data_settings

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
