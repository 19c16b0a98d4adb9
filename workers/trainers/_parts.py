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

    So that init_check checks the trainer's own training step (workers.probes: gradients
    zeroed, every layer learning, modes, evaluation), it may also expose `optimizer`, the
    one its loop builds over `model`; `step(x, y)`, one training step of its loop on a
    batch, mode switches included (e.g. model.train(), zero_grad, forward, loss,
    backward, optimizer.step()); `evaluate(x, y)`, its evaluation of a batch (e.g.
    model.eval() and a forward under torch.no_grad()). Without them the probes' own step
    and evaluation run on `model` and `loss`.
    """

    model: Any
    loss: Callable[..., Any]
    batches: Iterable[tuple[Any, Any]]
    expected_loss: float | None = None
    optimizer: Any = None
    step: Callable[[Any, Any], Any] | None = None
    evaluate: Callable[[Any, Any], Any] | None = None
