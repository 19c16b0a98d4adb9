"""What a trainer may expose so that the probes run on its own model, loss and data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainerParts:
    """A trainer's pieces, as `parts(ctx)` builds them for one probe.

    `model`: a fresh, untrained torch.nn.Module; `loss(out, y) -> scalar tensor`;
    `batches`: an iterable of (x, y) tensors, the training data as the trainer feeds it
    (the probes take what they need from its first batches). `expected_loss`: what the loss
    of a model that knows nothing should be; without it the init check infers it for
    torch's cross-entropy, BCE-with-logits and MSE losses, and else judges only the
    gradients.
    """

    model: Any
    loss: Callable[..., Any]
    batches: Iterable[tuple[Any, Any]]
    expected_loss: float | None = None
