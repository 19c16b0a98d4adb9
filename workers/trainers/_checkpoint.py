"""A trainer's checkpoint as bytes: the object it saved, the epoch after which it saved it.

The object is anything `torch.load(weights_only=True)` reads back (tensors, state_dicts,
plain containers and numbers: what a training loop needs to go on) or raw bytes, kept as
they are (a JAX or command trainer's own format).
"""

from __future__ import annotations

import io
from typing import Any

import torch

from stagetune.workers.errors import ConfigError

FORMAT = "stagetune-trainer-1"


def pack(trainer: str, epoch: int, obj: Any) -> bytes:
    payload = {"format": FORMAT, "trainer": trainer, "epoch": epoch,
               "raw": obj if isinstance(obj, bytes) else None,
               "state": None if isinstance(obj, bytes) else _to_cpu(obj)}
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
    except Exception as exc:  # pickling errors come in several kinds
        raise ConfigError(f"trainer '{trainer}': ctx.save_checkpoint got an object torch.save "
                          f"cannot write ({type(exc).__name__}: {exc}); save state_dicts, "
                          "tensors and plain containers") from None
    return buffer.getvalue()


def check_loadable(trainer: str, blob: bytes) -> None:
    """Fail at save time, not at resume, for an object a safe load cannot read."""
    unpack(trainer, blob)


def unpack(trainer: str, blob: bytes) -> tuple[int, Any]:
    """(epoch, object) of a checkpoint `pack` wrote for `trainer`."""
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for what it refuses to unpickle
        raise ConfigError(f"trainer '{trainer}': the checkpoint cannot be read back safely "
                          f"({type(exc).__name__}: {_first_line(exc)}); save state_dicts, "
                          "tensors, plain containers and numbers, or bytes") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"trainer '{trainer}': resume holds no trainer checkpoint (the "
                          "built-in loop's, or another format)")
    if payload["trainer"] != trainer:
        raise ConfigError(f"trainer '{trainer}': the checkpoint was taken by trainer "
                          f"'{payload['trainer']}'")
    obj = payload["raw"] if payload["raw"] is not None else payload["state"]
    return int(payload["epoch"]), obj


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else ""
